"""Token-level distillation across tokenizers: character spans from decoding, alignment where both
tokenizations start a token at the same character (the same text before it on both sides), and ULD's
sorted-probability loss, trained between two tiny models whose tokenizers (and vocabulary sizes) differ."""

import pytest
import torch

from sdk.distill.cross_tokenizer import align, student_rows, token_char_spans
from sdk.distill.divergences import NEG
from sdk.distill.losses import ResponseKD

TEXTS = ["def add(a, b):\n    return a + b\n", "Fraud? yes, the account is 4d old; prix: 12€ über", "x = [i * i for i in range(10)]"]


def _tokenizer(vocab_size, corpus_seed):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.conftest import CORPUS

    corpus = CORPUS + TEXTS * (3 + corpus_seed)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tokenizers():
    return _tokenizer(420, 0), _tokenizer(300, 2)


def test_spans_cover_the_text_and_aligned_positions_share_their_prefix(tokenizers):
    tt, st = tokenizers
    assert len(tt) != len(st)
    for text in TEXTS:
        t_ids, s_ids = tt(text)["input_ids"], st(text)["input_ids"]
        assert t_ids != s_ids  # the tokenizations really differ
        t_spans, s_spans = token_char_spans(tt, t_ids, text), token_char_spans(st, s_ids, text)
        assert t_spans[-1][1] == len(text) == s_spans[-1][1]
        for spans, ids, tok in ((t_spans, t_ids, tt), (s_spans, s_ids, st)):
            for i, (a, b) in enumerate(spans):  # a token's span ends where its decoded prefix ends
                assert text.startswith(tok.decode(ids[: i + 1]).rstrip("\ufffd")) and a <= b
        pairs = align(t_spans, s_spans)
        assert pairs[0] == (0, 0) and 1 < len(pairs) <= min(len(t_ids), len(s_ids))
        for ti, si in pairs:  # both models have seen exactly the same text before an aligned position
            assert tt.decode(t_ids[:ti]) == st.decode(s_ids[:si])
    assert token_char_spans(tt, tt("abc")["input_ids"], "abd") is None


def test_multibyte_characters_are_boundaries_only_once_complete(tokenizers):
    tt, _ = tokenizers
    text = "€€ ü"
    ids = tt(text)["input_ids"]
    spans = token_char_spans(tt, ids, text)
    assert spans[-1][1] == len(text) and all(e in (0, 1, 2, 3, 4) for _, e in spans)


def test_uld_is_zero_for_the_same_sorted_distribution_and_masks_unaligned_rows():
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    teacher = torch.log_softmax(logits[:, torch.randperm(50)], -1).topk(50, -1).values  # other ids, same probs
    loss = ResponseKD(alpha=0.0, temperature=1.0, alignment="uld", divergence="total_variation", tail="bucket")
    head = torch.nn.Linear(50, 50, bias=False)
    head.weight.data = torch.eye(50)
    targets = {"target_ids": torch.zeros(5, dtype=torch.long), "topk_logprobs": teacher,
               "topk_ids": torch.zeros(5, 50, dtype=torch.long)}
    assert loss(logits, head, targets).item() < 1e-5
    other = torch.log_softmax(torch.randn(5, 50) * 3, -1).topk(8, -1).values
    got = loss(logits, head, {**targets, "topk_logprobs": other, "topk_ids": torch.zeros(5, 8, dtype=torch.long)})
    p = torch.softmax(logits, -1).sort(-1, descending=True).values
    q = other.exp()
    want = 0.5 * ((q - p[:, :8]).abs().sum(-1) + ((1 - q.sum(-1)) - (1 - p[:, :8].sum(-1))).abs()).mean()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    masked = other.clone()
    masked[1:] = NEG  # only row 0 has an aligned teacher position
    got0 = loss(logits, head, {**targets, "topk_logprobs": masked, "topk_ids": torch.zeros(5, 8, dtype=torch.long)})
    row0 = 0.5 * ((q[0] - p[0, :8]).abs().sum() + ((1 - q[0].sum()) - (1 - p[0, :8].sum())).abs())
    torch.testing.assert_close(got0, row0 / 5, rtol=1e-4, atol=1e-5)  # a mean over all 5 positions


def test_a_student_learns_from_a_teacher_with_another_tokenizer(tokenizers):
    """Teacher and student: tiny llamas over different tokenizers. The teacher's top-k at its own tokens is
    moved to the student's aligned positions; ULD training brings the student's sorted distributions there
    toward the teacher's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tt, st = tokenizers
    torch.manual_seed(0)

    def model(vocab):
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
        return LlamaForCausalLM(cfg)

    teacher, student = model(len(tt)), model(len(st))
    with torch.no_grad():
        for p in teacher.parameters():
            p.mul_(6)  # a peaked teacher: something to learn
    k, rows = 8, []
    for text in TEXTS:
        t_ids, s_ids = tt(text)["input_ids"], st(text)["input_ids"]
        with torch.no_grad():
            t_logp = torch.log_softmax(teacher(torch.tensor([t_ids])).logits[0, :-1], -1)
        top = t_logp.topk(k, -1).values.numpy()  # position i predicts token i + 1
        t_spans, s_spans = token_char_spans(tt, t_ids, text), token_char_spans(st, s_ids, text)
        lp, ids, n = student_rows(top, t_spans[1:], s_spans[1:])
        assert n >= 1 and (lp[:, 0] > NEG / 2).sum() == n
        rows.append((s_ids, torch.from_numpy(lp), torch.from_numpy(ids)))
    loss = ResponseKD(alpha=0.0, temperature=1.0, alignment="uld", divergence="total_variation")
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)

    def total():
        out = 0.0
        for s_ids, lp, ids in rows:
            hidden = student.model(torch.tensor([s_ids])).last_hidden_state[0, :-1]
            out = out + loss(hidden, student.lm_head, {"target_ids": torch.tensor(s_ids[1:]), "topk_logprobs": lp,
                                                       "topk_ids": ids})
        return out

    first = total().item()
    for _ in range(30):
        opt.zero_grad()
        total().backward()
        opt.step()
    assert total().item() < 0.5 * first
