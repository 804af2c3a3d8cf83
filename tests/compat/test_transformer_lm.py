"""A PyTorch word-language-model script (the shape of pytorch/examples'
word_language_model: Dictionary/Corpus, batchify, get_batch, PositionalEncoding with a
buffer, a TransformerModel subclassing nn.Transformer, NLLLoss over log_softmax, clip_grad_norm_
and the manual SGD update through p.data), run unchanged apart from the import on a tiny
generated corpus: the training loss falls and the evaluation loss falls."""
import math

import dtrain as torch
import dtrain.nn.functional as F
from dtrain import nn


class Dictionary(object):
    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self):
        return len(self.idx2word)


class Corpus(object):
    def __init__(self, lines):
        self.dictionary = Dictionary()
        self.train = self.tokenize(lines)

    def tokenize(self, lines):
        idss = []
        for line in lines:
            words = line.split() + ["<eos>"]
            ids = []
            for word in words:
                ids.append(self.dictionary.add_word(word))
            idss.append(torch.tensor(ids, dtype=torch.int64))
        return torch.cat(idss)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, dropout=0.1, max_len=5000):
        super(PositionalEncoding, self).__init__()
        self.dropout = nn.Dropout(p=dropout)

        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        pe = pe.unsqueeze(0).transpose(0, 1)
        self.register_buffer("pe", pe)

    def forward(self, x):
        x = x + self.pe[:x.size(0), :]
        return self.dropout(x)


class TransformerModel(nn.Transformer):
    """Container module with an encoder, a recurrent or transformer module, and a decoder."""

    def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
        super(TransformerModel, self).__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid,
                                               num_encoder_layers=nlayers)
        self.model_type = "Transformer"
        self.src_mask = None
        self.pos_encoder = PositionalEncoding(ninp, dropout)

        self.input_emb = nn.Embedding(ntoken, ninp)
        self.ninp = ninp
        self.decoder = nn.Linear(ninp, ntoken)

        self.init_weights()

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.input_emb.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, src, has_mask=True):
        if has_mask:
            device = src.device
            if self.src_mask is None or self.src_mask.size(0) != len(src):
                mask = nn.Transformer.generate_square_subsequent_mask(len(src)).to(device)
                self.src_mask = mask
        else:
            self.src_mask = None

        src = self.input_emb(src) * math.sqrt(self.ninp)
        src = self.pos_encoder(src)
        output = self.encoder(src, mask=self.src_mask)
        output = self.decoder(output)
        return F.log_softmax(output, dim=-1)


def batchify(data, bsz, device):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    data = data.view(bsz, -1).t().contiguous()
    return data.to(device)


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i:i + seq_len]
    target = source[i + 1:i + 1 + seq_len].view(-1)
    return data, target


def evaluate(model, data_source, criterion, ntokens, bptt):
    model.eval()
    total_loss = 0.0
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i, bptt)
            output = model(data)
            output = output.view(-1, ntokens)
            total_loss += len(data) * criterion(output, targets).item()
    return total_loss / (len(data_source) - 1)


def test_transformer_word_language_model_learns():
    torch.manual_seed(1111)
    device = torch.device("cpu")
    words = "the cat sat on the mat and the dog ran to the red ball".split()
    lines = [" ".join(words[k:] + words[:k]) for k in range(0, len(words), 3)] * 3
    corpus = Corpus(lines)
    train_data = batchify(corpus.train, 4, device)
    ntokens = len(corpus.dictionary)
    bptt, clip, lr = 8, 0.25, 2.0
    model = TransformerModel(ntokens, 16, 2, 32, 2, dropout=0.1).to(device)
    assert model.decoder.weight.shape == (ntokens, 16) and not hasattr(model, "tgt_mask")
    assert "pos_encoder.pe" in model.state_dict()
    criterion = nn.NLLLoss()

    before = evaluate(model, train_data, criterion, ntokens, bptt)
    assert abs(before - math.log(ntokens)) < 0.5  # near uniform at the start
    losses = []
    for epoch in range(3):
        model.train()
        for batch, i in enumerate(range(0, train_data.size(0) - 1, bptt)):
            data, targets = get_batch(train_data, i, bptt)
            model.zero_grad()
            output = model(data)
            output = output.view(-1, ntokens)
            loss = criterion(output, targets)
            loss.backward()

            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
    after = evaluate(model, train_data, criterion, ntokens, bptt)
    assert after < 0.7 * before
    assert sum(losses[-4:]) < 0.7 * sum(losses[:4])
    assert model.src_mask.dtype == torch.float32
    assert model.src_mask[0, 1].item() == float("-inf") and model.src_mask[1, 0].item() == 0.0

    model.eval()  # causal: changing the last token leaves every earlier position's output
    data, _ = get_batch(train_data, 0, bptt)
    changed = data.clone()
    changed[-1] = (changed[-1] + 1) % ntokens
    with torch.no_grad():
        a, b = model(data), model(changed)
    assert torch.equal(a[:-1], b[:-1]) and not torch.equal(a[-1], b[-1])
