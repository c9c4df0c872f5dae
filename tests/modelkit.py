"""Helpers for the model and train tests: score multiple-choice examples by log-likelihood.

This is the textbook scoring (what lm-eval's ``acc`` does for multiple_choice): each choice's
summed log-probability as a continuation of the question, argmax, compared with the answer.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def mc_accuracy(model, tokenizer, examples: list[dict], batch: int = 256) -> float:
    rows = []  # (example index, choice index, ids, continuation length)
    for i, ex in enumerate(examples):
        ctx = tokenizer(ex["question"], add_special_tokens=False)["input_ids"]
        for j, choice in enumerate(ex["choices"]):
            full = tokenizer(ex["question"] + " " + choice, add_special_tokens=False)["input_ids"]
            assert full[: len(ctx)] == ctx, "the question must tokenise the same inside the text"
            rows.append((i, j, full, len(full) - len(ctx)))
    scores = torch.full((len(examples), max(len(e["choices"]) for e in examples)), -1e30)
    model.eval()
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        width = max(len(r[2]) for r in part)
        ids = torch.full((len(part), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for k, (_, _, seq, _) in enumerate(part):  # right padding: positions stay aligned
            ids[k, : len(seq)] = torch.tensor(seq)
            mask[k, : len(seq)] = 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for k, (i, j, seq, n_cont) in enumerate(part):
            pos = torch.arange(len(seq) - n_cont, len(seq))
            scores[i, j] = logp[k, pos - 1, torch.tensor(seq)[pos]].sum()
    predicted = scores.argmax(-1)
    answers = torch.tensor([ex["answer"] for ex in examples])
    return (predicted == answers).float().mean().item()
