"""A PyTorch user's script on dtrain: learn the next-token distribution of a small Markov
chain (data drawn with torch.multinomial, one-hot inputs written with scatter_, bigram
counts with index_put_(accumulate=True), weights initialised with torch.normal), then
generate with temperature and top-1 masking (with torch.finfo(dtype).min) by
torch.multinomial; manual_seed and generator= repeat the draws."""
import numpy as np

import dtrain as torch
import dtrain.nn.functional as F
from dtrain import nn

V = 6


def make_data(n, generator):
    trans = torch.rand(V, V, generator=generator) ** 3 + 0.01
    trans = trans / trans.sum(1, keepdim=True)
    x = torch.randint(V, (n,), generator=generator)
    y = torch.multinomial(trans[x], 1, generator=generator).squeeze(1)
    return trans, x, y


def one_hot(tokens):
    return torch.zeros(len(tokens), V).scatter_(1, tokens.unsqueeze(1), 1.0)


def generate(model, start, steps, temperature=1.0, greedy_mask=False):
    out = [start]
    tok = torch.tensor([start])
    with torch.no_grad():
        for _ in range(steps):
            logits = model(one_hot(tok)) / temperature
            if greedy_mask:  # keep only the best logit, as top-k sampling with k = 1
                best = logits.max(dim=-1, keepdim=True).values
                logits = logits.masked_fill(logits < best, torch.finfo(logits.dtype).min)
            tok = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1).squeeze(1)
            out.append(tok.item())
    return out


def test_markov_chain_next_token_model_trains_and_samples():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1234)
    trans, x, y = make_data(4000, g)
    xs = one_hot(x)
    np.testing.assert_array_equal(xs.numpy(), np.eye(V, dtype=np.float32)[x.numpy()])

    counts = torch.zeros(V, V).index_put_((x, y), torch.ones(len(x)), accumulate=True)
    want = np.zeros((V, V), np.float32)
    np.add.at(want, (x.numpy(), y.numpy()), 1.0)
    np.testing.assert_array_equal(counts.numpy(), want)
    empirical = counts / counts.sum(1, keepdim=True)
    assert (empirical - trans).abs().max().item() < 0.06  # multinomial drew from trans

    model = nn.Sequential(nn.Linear(V, 32), nn.ReLU(), nn.Linear(32, V))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.copy_(torch.normal(0.0, 0.3, size=layer.weight.shape))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    losses = []
    for step in range(100):
        loss = F.cross_entropy(model(xs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    entropy = -(empirical * empirical.clamp(min=1e-12).log()).sum(1)
    floor = (entropy[x].mean()).item()  # the best achievable cross-entropy on this data
    assert losses[-1] < losses[0] - 0.4
    assert losses[-1] < floor + 0.005  # the model reaches the data's entropy
    with torch.no_grad():
        learned = F.softmax(model(torch.eye(V)), dim=-1)
    assert (learned - empirical).abs().max().item() < 0.01  # and its bigram frequencies

    torch.manual_seed(7)
    first = generate(model, 0, 30)
    torch.manual_seed(7)
    assert generate(model, 0, 30) == first  # manual_seed repeats multinomial's draws
    greedy_ish = generate(model, 0, 30, temperature=0.05)
    argmax_next = learned.argmax(1).tolist()
    assert all(b == argmax_next[a] for a, b in zip(greedy_ish, greedy_ish[1:]))
    top1 = generate(model, 2, 10, greedy_mask=True)
    assert all(b == argmax_next[a] for a, b in zip(top1, top1[1:]))

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    _, x1, y1 = make_data(50, g1)
    _, x2, y2 = make_data(50, g2)
    assert x1.tolist() == x2.tolist() and y1.tolist() == y2.tolist()
