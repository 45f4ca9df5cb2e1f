"""FACE-net modules (eq. 10-32) on small random inputs: shapes, weights, ablations, losses, overfitting."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from facenet_evc.models.config import FaceNetConfig
from facenet_evc.models.dbar import DBAR
from facenet_evc.models.facenet import FaceNet
from facenet_evc.models.fcue import FCUE, cross_refinement_weights, self_refinement_weights
from facenet_evc.models.losses import (
    emotion_cls_loss,
    emotion_token_weights,
    emotion_weighted_ce,
    emotion_word_spans,
    hf_emotion_token_mask,
    total_loss,
    vocab_emotion_table,
)
from facenet_evc.models.pvea import PVEA
from facenet_evc.models.qformer import QFormer

B, K, N, D, NW, C = 2, 4, 16, 32, 20, 5
D_V, D_T, D_E = 48, 40, 24  # distinct input widths so every projection is exercised (literal reading)
VOCAB, L = 30, 7
PAD, BOS, EOS = 0, 1, 2


class TinyGRUDecoder(nn.Module):
    """Implements the decoder contract of facenet.py with a word vocabulary and a GRU."""

    def __init__(self, vocab: int = VOCAB, d_model: int = 24) -> None:
        super().__init__()
        self.d_model, self.pad_id, self.bos_id, self.eos_id = d_model, PAD, BOS, EOS
        self.emb = nn.Embedding(vocab, d_model)
        self.init = nn.Linear(d_model, d_model)
        self.gru = nn.GRU(2 * d_model, d_model, batch_first=True)
        self.out = nn.Linear(d_model, vocab)

    def _step_inputs(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        ctx = memory.mean(1, keepdim=True).expand(-1, tokens.shape[1], -1)  # (B, T, d_model)
        return torch.cat([self.emb(tokens), ctx], dim=-1)

    def forward(self, memory, targets, target_weights=None):
        bos = targets.new_full((targets.shape[0], 1), BOS)
        inputs = torch.cat([bos, targets[:, :-1]], dim=1)  # (B, L) shifted right
        h0 = torch.tanh(self.init(memory.mean(1))).unsqueeze(0)  # (1, B, d_model)
        y, _ = self.gru(self._step_inputs(memory, inputs), h0)
        return self.out(y)  # (B, L, V)

    @torch.no_grad()
    def generate(self, memory, num_beams: int = 5, max_len: int = 15):  # greedy; num_beams unused here
        h = torch.tanh(self.init(memory.mean(1))).unsqueeze(0)
        tok = torch.full((memory.shape[0], 1), BOS, dtype=torch.long)
        out = []
        for _ in range(max_len):
            y, h = self.gru(self._step_inputs(memory, tok), h)
            tok = self.out(y[:, -1]).argmax(-1, keepdim=True)
            out.append(tok)
        seqs = torch.cat(out, 1).tolist()
        return [s[: s.index(EOS)] if EOS in s else s for s in seqs]


# one torch thread for the whole module (conftest.py: one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


def make_cfg(**kw) -> FaceNetConfig:
    # distinct widths need the literal refinement reading (the clip one compares frames and texts)
    base = dict(d=D, d_v=D_V, d_t=D_T, d_e=D_E, n_frames=N, k=K, n_heads=4, ffn_mult=2, dropout=0.0, n_queries=8,
                refine_reading="literal")
    base.update(kw)
    return FaceNetConfig(**base)


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emotion_mask = torch.zeros(B, L)
    emotion_mask[0, 2] = emotion_mask[1, 4] = 1
    targets = torch.randint(3, VOCAB, (B, L), generator=g)
    targets[1, -2:] = PAD
    return {
        "frames": torch.randn(B, N, D_V, generator=g),
        "triplets": F.normalize(torch.randn(B, K, 3, D_T, generator=g), dim=-1) * 3,
        "sims": torch.rand(B, K, generator=g) * 0.5 + 0.1,
        "emotion_targets": torch.tensor([[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.float32),
        "emotion_mask": emotion_mask,
        "targets": targets,
    }


def make_model(cfg: FaceNetConfig, seed: int = 0) -> FaceNet:
    torch.manual_seed(seed)
    lexicon = torch.randn(NW, D_E)
    word_category = torch.zeros(NW, C)
    word_category[torch.arange(NW), torch.arange(NW) % C] = 1
    return FaceNet(cfg, lexicon, word_category, TinyGRUDecoder())


# ---------------------------------------------------------------- config


def test_config_roundtrip_and_validation():
    cfg = make_cfg(decoder="t5", decoder_settings={"name": "google/flan-t5-xl", "lora": {"r": 16, "alpha": 32}})
    assert FaceNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        FaceNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="order"):
        make_cfg(order="sideways")
    with pytest.raises(ValueError, match="divisible"):
        make_cfg(n_heads=5)


# ---------------------------------------------------------------- FCUE


def test_self_refinement_is_normalised_entropy():
    torch.manual_seed(0)
    t = torch.randn(B, K, 3, D_T)
    alpha = self_refinement_weights(t)
    assert alpha.shape == (B, K, 3)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(B, K))
    # hand computation for triplet (0, 1): eq. 10-12 with plain Python
    ents = []
    for c in range(3):
        xs = t[0, 1, c].tolist()
        z = sum(math.exp(x) for x in xs)
        ents.append(-sum(math.exp(x) / z * math.log(math.exp(x) / z) for x in xs))
    expected = torch.tensor([h / sum(ents) for h in ents])
    torch.testing.assert_close(alpha[0, 1], expected, atol=1e-5, rtol=1e-5)


def test_cross_refinement_hand_case():
    sims = torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.3, 0.3, 0.3, 0.3]])
    theta = cross_refinement_weights(sims)
    torch.testing.assert_close(theta.sum(-1), torch.ones(2))
    p = [0.4, 0.3, 0.2, 0.1]  # already sums to 1
    h = [-x * math.log(x) for x in p]
    torch.testing.assert_close(theta[0], torch.tensor([x / sum(h) for x in h]), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(theta[1], torch.full((4,), 0.25))
    # negative cosines are clamped; one group only carries no entropy -> weight 1
    assert (cross_refinement_weights(torch.tensor([[0.5, -0.2, 0.3, 0.1]])) >= 0).all()
    torch.testing.assert_close(cross_refinement_weights(torch.tensor([[0.7]])), torch.ones(1, 1))


def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1)


def test_literal_refinement_is_flat_on_unit_clip_vectors():
    """Why the clip reading exists: at temperature 1 a unit-norm text vector gives uniform alpha."""
    torch.manual_seed(0)
    t = _unit(torch.randn(B, K, 3, 64))
    alpha = self_refinement_weights(t)
    assert (alpha - 1 / 3).abs().max() < 1e-3


def test_clip_reading_alpha_and_theta_respond_to_the_input():
    torch.manual_seed(0)
    d = 64
    video = torch.randn(B, d)
    t = _unit(torch.randn(B, K, 3, d))
    # group 0 of every sample is the video's own direction: CR must favour it
    t[:, 0] = _unit(video)[:, None, :].expand(B, 3, d)
    # part S of group 1 is a concentrated (one-hot-ish) vector, so SR must give it a lower entropy share
    t[:, 1, 0] = _unit(torch.nn.functional.one_hot(torch.tensor(3), d).float() * 5 + 0.01 * torch.randn(d))
    cfg = make_cfg(d_v=d, d_t=d, refine_reading="clip")
    fcue = FCUE(cfg)
    alpha, theta = fcue.refine_weights(t, torch.full((B, K), 0.3), video)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(B, K))
    torch.testing.assert_close(theta.sum(-1), torch.ones(B))
    assert (theta.argmax(-1) == 0).all() and (theta[:, 0] > 0.9).all()
    assert (alpha[:, 1, 0] < alpha[:, 1, 1]).all() and (alpha[:, 1, 0] < alpha[:, 1, 2]).all()
    # alpha varies across the parts of random triplets (it is 1/3 +- 1e-4 under the literal reading)
    assert (alpha[:, 2:].amax(-1) - alpha[:, 2:].amin(-1)).mean() > 0.01
    # hand check of eq. 14 (clip reading): softmax over K of scale * mean_c cos(v, T_i^c)
    s = torch.stack([torch.stack([(_unit(video[b]) * t[b, i]).sum(-1).mean() for i in range(K)]) for b in range(B)])
    torch.testing.assert_close(theta, torch.softmax(100.0 * s, -1), atol=1e-5, rtol=1e-4)
    # the scales are learned: a loss through theta reaches log_refine_scale
    alpha2, theta2 = fcue.refine_weights(t, torch.full((B, K), 0.3), video)
    (alpha2[:, :, 0].sum() + theta2[:, 1].sum()).backward()
    assert fcue.log_refine_scale.grad is not None and (fcue.log_refine_scale.grad != 0).all()


def test_clip_reading_needs_one_clip_space_and_the_video():
    with pytest.raises(ValueError, match="d_v=48 must equal d_t=40"):
        FCUE(make_cfg(refine_reading="clip"))
    fcue = FCUE(make_cfg(d_v=D_T, refine_reading="clip"))
    with pytest.raises(ValueError, match="v̂"):
        fcue.refine_weights(torch.randn(B, K, 3, D_T), torch.rand(B, K), None)
    with pytest.raises(ValueError, match="refine_reading"):
        make_cfg(refine_reading="printed")


def test_fcue_shapes_and_rescale():
    cfg = make_cfg()
    fcue = FCUE(cfg)
    batch = make_batch()
    v = torch.randn(B, N, D)
    out = fcue(v, batch["triplets"], batch["sims"])
    assert out.f.shape == out.h.shape == (B, K, N, D)
    assert out.alpha.shape == (B, K, 3) and out.theta.shape == (B, K)
    torch.testing.assert_close(out.theta.sum(-1), torch.ones(B))
    # applied scale: uniform weights (3 * 1/3, K * 1/K) are the identity, as with both switches off
    off = FCUE(make_cfg(self_refine=False, cross_refine=False))
    off.load_state_dict(fcue.state_dict())
    uniform_sims = torch.full((B, K), 0.3)
    t = batch["triplets"]
    same = torch.ones_like(t)  # identical parts -> alpha exactly 1/3
    o1, o2 = fcue(v, same, uniform_sims), off(v, same, uniform_sims)
    torch.testing.assert_close(o1.f, o2.f)
    assert (o2.alpha == 1).all() and (o2.theta == 1).all()


# ---------------------------------------------------------------- PVEA / DBAR / Q-Former


def test_pvea_shapes_and_attention_rows():
    cfg = make_cfg()
    out = PVEA(cfg)(torch.randn(B, K, N, D), torch.randn(B, N, D), torch.randn(NW, D_E))
    assert out.e.shape == (B, K, N, D)
    assert out.lexicon_attn.shape == (B, K, N, NW)
    torch.testing.assert_close(out.lexicon_attn.sum(-1), torch.ones(B, K, N))
    torch.testing.assert_close(out.q_v.sum(-1), torch.ones(B, K, N))


@pytest.mark.parametrize("d_e", [D_E, D], ids=["d_e != d", "d_e == d (packed weights)"])
def test_pvea_lexicon_attention_equals_multihead_attention(d_e):
    """attend_lexicon projects E_0 once; nn.MultiheadAttention on the lexicon expanded to the batch
    is the reference, for the output, the weights and every gradient."""
    torch.manual_seed(0)
    pvea = PVEA(make_cfg(d_e=d_e)).eval()  # eval: no attention dropout
    f = torch.randn(B * K, N, D, requires_grad=True)
    lex = torch.randn(NW, d_e)
    mha = pvea.attn_c
    weights_in = [mha.in_proj_weight] if d_e == D else [mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight]
    wanted = [f, *weights_in, mha.in_proj_bias, mha.out_proj.weight]
    out, weights = pvea.attend_lexicon(f, lex)
    big = lex.expand(B * K, NW, d_e)
    ref, ref_weights = mha(f, big, big, need_weights=True, average_attn_weights=True)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(weights, ref_weights)
    probe = torch.randn_like(out)
    grads = torch.autograd.grad((out * probe).sum(), wanted)
    ref_grads = torch.autograd.grad((ref * probe).sum(), wanted)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_dbar_gates_router_and_order():
    torch.manual_seed(0)
    f, e, h = (torch.randn(B, K, N, D) * 3 for _ in range(3))
    ff = DBAR(make_cfg())
    out = ff(f, e, h)
    assert out.m.shape == (B, 2 * N, D)
    assert out.b_f.shape == out.b_e.shape == (B, D)
    assert (out.b_f.abs() < 1).all() and (out.b_e.abs() < 1).all()
    torch.testing.assert_close(out.g.sum(-1), torch.ones(B))
    f_half = out.b_f[:, None] * (out.g[:, :, None, None] * f).sum(1)
    torch.testing.assert_close(out.m[:, :N], f_half)
    ef = DBAR(make_cfg(order="emotion_first"))
    ef.load_state_dict(ff.state_dict())
    out2 = ef(f, e, h)
    torch.testing.assert_close(out2.m[:, :N], out.m[:, N:])
    torch.testing.assert_close(out2.m[:, N:], out.m[:, :N])
    # BA off: plain means, uniform g, no gates
    plain = DBAR(make_cfg(use_dbar=False))(f, e, h)
    torch.testing.assert_close(plain.m, torch.cat([f.mean(1), e.mean(1)], 1))
    assert plain.b_f is None and torch.allclose(plain.g, torch.full((B, K), 1 / K))


def test_qformer_shape_and_memory_order_invariance():
    qf = QFormer(make_cfg(), d_out=24).eval()
    mem = torch.randn(B, 3 * N, D)
    out = qf(mem)
    assert out.shape == (B, 8, 24)
    swapped = torch.cat([mem[:, N : 2 * N], mem[:, :N], mem[:, 2 * N :]], 1)  # [E; F; V]
    torch.testing.assert_close(qf(swapped), out)  # why `order` must change more than M's layout


# ---------------------------------------------------------------- full model


def test_full_model_shapes_explain_and_generate():
    model = make_model(make_cfg())
    batch = make_batch()
    out = model(batch, batch["targets"])
    assert out["logits"].shape == (B, L, VOCAB)
    assert out["memory"].shape == (B, 8, 24)
    assert out["m"].shape == (B, 2 * N, D)
    assert out["emotion_logits"].shape == (B, C)
    ex = out["explain"]
    assert ex["alpha"].shape == (B, K, 3) and ex["theta"].shape == (B, K) and ex["g"].shape == (B, K)
    assert ex["lexicon_attn"].shape == (B, K, N, NW) and ex["category_attn"].shape == (B, K, N, C)
    torch.testing.assert_close(ex["category_attn"].sum(-1), torch.ones(B, K, N))  # one category per word here
    expected = total_loss(out["loss_e"], out["loss_cls"], 1.0, 0.1)
    torch.testing.assert_close(out["loss"], expected)
    model.eval()
    seqs = model.generate(batch, num_beams=1, max_len=5)
    assert len(seqs) == B and all(len(s) <= 5 for s in seqs)


def test_every_parameter_gets_a_gradient():
    model = make_model(make_cfg())
    batch = make_batch()
    model(batch, batch["targets"])["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


SWITCHES = ["use_retrieval", "use_fcue", "self_refine", "cross_refine", "use_pvea", "use_dbar"]


@pytest.mark.parametrize("order", ["fact_first", "emotion_first"])
def test_every_ablation_combination_runs(order):
    batch = make_batch()
    for values in itertools.product([True, False], repeat=len(SWITCHES)):
        cfg = make_cfg(order=order, **dict(zip(SWITCHES, values)))
        model = make_model(cfg)
        out = model(batch, batch["targets"])
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        unused = [n for n, p in model.named_parameters() if p.grad is None]
        assert not unused, (dict(zip(SWITCHES, values)), unused)  # nothing built that is not used
        has_e = cfg.use_retrieval and cfg.use_pvea
        assert (out["loss_cls"] is not None) == has_e
        if cfg.use_retrieval:
            assert out["m"].shape == (B, (2 if has_e else 1) * N, D)


def test_frame_positions_make_the_model_see_frame_order():
    batch = make_batch()
    reversed_batch = {**batch, "frames": batch["frames"].flip(1)}  # the same frames, played backwards
    for use_retrieval in (True, False):
        bag = make_model(make_cfg(frame_positions=False, use_retrieval=use_retrieval)).eval()
        # The printed model reads a bag of frames: reversing the video changes nothing.
        torch.testing.assert_close(bag.encode(reversed_batch)["memory"], bag.encode(batch)["memory"])
        ordered = make_model(make_cfg(use_retrieval=use_retrieval)).eval()
        assert ordered.frame_pos.shape == (N, D) and not ordered.frame_pos.any()  # starts as the bag
        with torch.no_grad():
            ordered.frame_pos.normal_()
        assert not torch.allclose(ordered.encode(reversed_batch)["memory"], ordered.encode(batch)["memory"])


def test_motion_token_gives_the_q_former_the_frames_change():
    batch = make_batch()
    reversed_batch = {**batch, "frames": batch["frames"].flip(1)}  # played backwards: the change flips sign
    for use_retrieval in (True, False):
        # Even without frame positions, the motion token tells a video from its reverse.
        model = make_model(make_cfg(frame_positions=False, motion_token=True, use_retrieval=use_retrieval)).eval()
        assert not torch.allclose(model.encode(reversed_batch)["memory"], model.encode(batch)["memory"])
        token = model.motion_token(batch["frames"])  # (B, 1, d)
        assert token.shape == (B, 1, D)
        torch.testing.assert_close(model.motion_token(reversed_batch["frames"]) - model.motion_proj.bias,
                                   -(token - model.motion_proj.bias))
        model(batch, batch["targets"])["loss"].backward()
        assert model.motion_proj.weight.grad is not None and model.motion_proj.weight.grad.abs().sum() > 0
    assert make_model(make_cfg()).motion_proj is None  # off by default: the tables' model


def test_emotion_first_changes_the_computation():
    ff = make_model(make_cfg()).eval()
    ef = make_model(make_cfg(order="emotion_first")).eval()
    ef.load_state_dict(ff.state_dict())
    batch = make_batch()
    assert not torch.allclose(ff.encode(batch)["memory"], ef.encode(batch)["memory"])


@pytest.mark.slow  # trains a model
def test_overfits_one_batch():
    torch.manual_seed(0)
    model = make_model(make_cfg())
    batch = make_batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = model(batch, batch["targets"])["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


# ---------------------------------------------------------------- losses


def test_weighted_ce_reduces_to_ce_and_weights_emotion_tokens():
    torch.manual_seed(0)
    logits = torch.randn(B, L, VOCAB)
    targets = make_batch()["targets"]
    is_emotion = torch.zeros(VOCAB, dtype=torch.bool)
    is_emotion[targets[0, 2]] = True
    w0 = emotion_token_weights(targets, is_emotion, delta=0.0)
    plain = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=PAD)
    torch.testing.assert_close(emotion_weighted_ce(logits, targets, w0, PAD), plain)
    # hand check: mean over non-pad tokens, emotion tokens counted (1 + delta) times
    delta = 0.5
    w = emotion_token_weights(targets, is_emotion, delta)
    nll = -F.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    keep = targets != PAD
    hand = sum(
        (1 + delta * bool(is_emotion[targets[b, t]])) * nll[b, t].item()
        for b in range(B)
        for t in range(L)
        if keep[b, t]
    ) / keep.sum().item()
    assert emotion_weighted_ce(logits, targets, w, PAD).item() == pytest.approx(hand, rel=1e-5)
    assert w[0, 2] == 1 + delta


def test_cls_loss_hand_case():
    logits = torch.tensor([[0.0, math.log(2.0), 0.0, math.log(3.0)], [1.0, 2.0, 3.0, 4.0]])
    targets = torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0]], dtype=torch.float32)  # 2nd: no category, skipped
    # softmax row 0 = [1, 2, 1, 3] / 7
    expected = -(math.log(2 / 7) + math.log(3 / 7)) / 2
    assert emotion_cls_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert emotion_cls_loss(logits, torch.zeros_like(targets)).item() == 0.0


def test_word_and_subword_emotion_masks():
    itos = ["<pad>", "<bos>", "<eos>", "a", "man", "smiles", "happily"]
    table = vocab_emotion_table(itos, ["Happily", "sad"])
    assert table.tolist() == [False] * 6 + [True]
    assert emotion_word_spans("a man smiles happily.", ["happily"]) == [(13, 20)]

    class FakeFastTokenizer:  # splits "happily" into "▁hap" + "pily", as SentencePiece might
        def __call__(self, texts, return_offsets_mapping=False, **kw):
            ids, offs = [], []
            for t in texts:
                i, o = [], []
                for m in __import__("re").finditer(r"\S+", t):
                    s, e = m.span()
                    pieces = [(s, s + 3), (s + 3, e)] if e - s > 5 else [(s, e)]
                    i += [len(o) + k + 5 for k in range(len(pieces))]
                    o += pieces
                ids.append(i + [EOS])
                offs.append(o + [(0, 0)])
            return {"input_ids": ids, "offset_mapping": offs}

    enc, mask = hf_emotion_token_mask(FakeFastTokenizer(), ["a man smiles happily"], ["happily"])
    # pieces: a, man, smi|les, hap|pily, </s>
    assert mask == [[False, False, False, False, True, True, False]]
    assert "offset_mapping" not in enc
    w = emotion_token_weights(torch.tensor(enc["input_ids"]), torch.tensor(mask), delta=0.2)
    assert w.tolist()[0] == pytest.approx([1, 1, 1, 1, 1.2, 1.2, 1])


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_with_real_word_decoders(kind):
    from facenet_evc.models import decoders

    lexicon_words = ["happily", "sadly"]
    captions = ["a man smiles happily", "a dog sits sadly on the grass"]
    vocab = decoders.Vocab.build(captions, lexicon_words)
    cfg = make_cfg(decoder=kind)
    dec = decoders.create_decoder(kind, cfg.d, {"hidden_size": 32, "num_layers": 1}, vocab, lexicon_words)
    torch.manual_seed(0)
    model = FaceNet(cfg, torch.randn(NW, D_E), torch.eye(C).repeat(NW // C, 1), dec)
    targets, weights = dec.encode_targets(captions, lexicon_words, cfg.delta)
    batch = {**make_batch(), "target_weights": weights}
    out = model(batch, targets)
    assert out["logits"].shape[:2] == targets.shape
    out["loss"].backward()
    model.eval()
    assert len(model.generate(batch, num_beams=2, max_len=5)) == B
