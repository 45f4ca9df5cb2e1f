"""LSTM caption decoder with additive attention over the Q-Former memory (SA-LSTM / EPAN style).

At step t, with top-layer state h_{t-1} and memory rows m_i (Bahdanau et al., 2015):

    e_{t,i} = vᵀ tanh(W_h h_{t-1} + W_m m_i),   α_t = softmax(e_t),   c_t = Σ_i α_{t,i} m_i
    h_t, s_t = LSTM([E(y_{t-1}); c_t], (h_{t-1}, s_{t-1}))
    P(y_t | y_<t) = softmax(W_o dropout([h_t; c_t]))

The initial states are ``tanh`` projections of the mean memory row (Show-Attend-Tell), so
the first word already depends on the video.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import weighted_token_nll
from .beam import beam_search
from .vocab import EOS_ID, SOS_ID, Vocab
from .word import WordDecoder


class AdditiveAttention(nn.Module):
    """Bahdanau attention of one query vector over a set of memory rows."""

    def __init__(self, d_query: int, d_memory: int, d_attn: int) -> None:
        super().__init__()
        self.w_q = nn.Linear(d_query, d_attn, bias=False)
        self.w_m = nn.Linear(d_memory, d_attn)
        self.v = nn.Linear(d_attn, 1, bias=False)

    def project_memory(self, memory: torch.Tensor) -> torch.Tensor:
        """``W_m m`` once per sequence instead of once per step. (B, Nq, A)"""
        return self.w_m(memory)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, mem_proj: torch.Tensor) -> torch.Tensor:
        # query (B, Hq), memory (B, Nq, D), mem_proj (B, Nq, A)
        e = self.v(torch.tanh(mem_proj + self.w_q(query).unsqueeze(1))).squeeze(-1)  # (B, Nq)
        alpha = e.softmax(dim=-1)
        return torch.bmm(alpha.unsqueeze(1), memory).squeeze(1)  # (B, D)


class LSTMDecoder(WordDecoder):
    """Word-level LSTM decoder attending to the memory at every step.

    Args:
        vocab: output vocabulary.
        d_model: memory width (the Q-Former output width).
        hidden_size: LSTM hidden size.
        num_layers: stacked LSTM cells; attention is driven by the top one.
        embed_size: word embedding size.
        attn_size: inner size of the additive attention.
        dropout: on embeddings and on the output features.
        max_words: caption length cap of the targets.
    """

    def __init__(
        self,
        vocab: Vocab,
        d_model: int,
        hidden_size: int = 512,
        num_layers: int = 1,
        embed_size: int = 300,
        attn_size: int = 256,
        dropout: float = 0.3,
        max_words: int = 15,
    ) -> None:
        super().__init__(vocab, max_words)
        self.d_model = d_model
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.embed = nn.Embedding(len(vocab), embed_size, padding_idx=0)
        self.attn = AdditiveAttention(hidden_size, d_model, attn_size)
        self.cells = nn.ModuleList(
            nn.LSTMCell(embed_size + d_model if i == 0 else hidden_size, hidden_size) for i in range(num_layers)
        )
        self.init_h = nn.Linear(d_model, num_layers * hidden_size)
        self.init_c = nn.Linear(d_model, num_layers * hidden_size)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size + d_model, len(vocab))

    def _init_state(self, memory: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(h, c, memory, W_m·memory) with h, c of shape (B, layers, H)."""
        mean = memory.mean(dim=1)  # (B, D)
        h = torch.tanh(self.init_h(mean)).view(-1, self.num_layers, self.hidden_size)
        c = torch.tanh(self.init_c(mean)).view(-1, self.num_layers, self.hidden_size)
        return h, c, memory, self.attn.project_memory(memory)

    def _step(
        self, word: torch.Tensor, state: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One word in -> next-word logits (B, V) and the new state."""
        h, c, memory, mem_proj = state
        ctx = self.attn(h[:, -1], memory, mem_proj)  # (B, D)
        x = torch.cat([self.drop(self.embed(word)), ctx], dim=-1)
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            h_i, c_i = cell(x, (h[:, i], c[:, i]))
            hs.append(h_i)
            cs.append(c_i)
            x = self.drop(h_i) if i + 1 < self.num_layers else h_i
        logits = self.out(self.drop(torch.cat([x, ctx], dim=-1)))  # (B, V)
        return logits, (torch.stack(hs, 1), torch.stack(cs, 1), memory, mem_proj)

    def forward(
        self,
        memory: torch.Tensor,
        targets: torch.Tensor,
        target_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        state = self._init_state(memory)
        inputs = self._shift_right(targets)  # (B, L)
        steps = []
        for t in range(inputs.size(1)):
            logits_t, state = self._step(inputs[:, t], state)
            steps.append(logits_t)
        logits = torch.stack(steps, dim=1)  # (B, L, V)
        return {"logits": logits, "loss": weighted_token_nll(logits, targets, target_weights, self.pad_id)}

    def generate(
        self, memory: torch.Tensor, num_beams: int = 5, max_len: int = 15, length_penalty: float = 1.0
    ) -> list[list[int]]:
        with self._eval_mode():
            def step(prefix: torch.Tensor, state: tuple[torch.Tensor, ...]):
                logits, state = self._step(prefix[:, -1], state)
                logits = logits.float().masked_fill(self.banned, float("-inf"))
                return F.log_softmax(logits, dim=-1), state

            return beam_search(step, self._init_state(memory), memory.size(0), num_beams, max_len,
                               SOS_ID, EOS_ID, length_penalty)
