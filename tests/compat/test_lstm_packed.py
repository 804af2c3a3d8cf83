"""A PyTorch sequence-classification script with variable-length batches: pad_sequence,
an Embedding with padding_idx, pack_padded_sequence(enforce_sorted=False) into an LSTM,
pad_packed_sequence, a Linear on h_n, CrossEntropyLoss and Adam; run unchanged apart from
the import. The task (name the last token of each sequence) needs each sequence's own final
state: the loss falls and the accuracy rises; the packed outputs' exact layout is checked."""
import dtrain as torch
import dtrain.nn as nn
from dtrain.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence


class LastTokenClassifier(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_dim, num_classes):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, num_classes)

    def forward(self, x, lengths):
        embedded = self.embedding(x)
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        packed_out, (h_n, c_n) = self.lstm(packed)
        out, out_lengths = pad_packed_sequence(packed_out, batch_first=True)
        return self.fc(h_n[-1]), out, out_lengths


def make_batch(generator, batch_size=16, vocab=6):
    lengths = torch.randint(2, 8, (batch_size,), generator=generator)
    seqs = [torch.randint(1, vocab, (int(n),), generator=generator) for n in lengths]
    labels = torch.stack([s[-1] for s in seqs])
    return pad_sequence(seqs, batch_first=True), lengths, labels


def test_lstm_on_packed_variable_length_batches_learns():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = LastTokenClassifier(6, 8, 16, 6)
    model.lstm.flatten_parameters()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    criterion = nn.CrossEntropyLoss()
    losses, accs = [], []
    for step in range(40):
        x, lengths, labels = make_batch(g)
        logits, out, out_lengths = model(x, lengths)
        loss = criterion(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        accs.append((logits.argmax(1) == labels).float().mean().item())
    assert sum(losses[-5:]) < 0.1 * sum(losses[:5])
    assert sum(accs[-5:]) / 5 > 0.9 and sum(accs[:5]) / 5 < 0.6

    model.eval()
    x, lengths, labels = make_batch(g)
    with torch.no_grad():
        logits, out, out_lengths = model(x, lengths)
        h_n = model.lstm(pack_padded_sequence(model.embedding(x), lengths, batch_first=True,
                                              enforce_sorted=False))[1][0]
    assert torch.equal(out_lengths, lengths)
    assert out.shape == (16, int(lengths.max()), 16)
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(out[i, n - 1], h_n[0, i])  # the output at its own last step
        assert out[i, n:].abs().sum().item() == 0.0  # padding past its length
