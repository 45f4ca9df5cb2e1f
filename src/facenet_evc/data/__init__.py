"""Readers for EmVidCap captions, the emotion lexicon, videos and the synthetic demo."""
