"""Captioning new videos outside the workflow: an exported model directory (:mod:`.export`)
and the captioner that reads it (:mod:`.caption`)."""
