"""A PyTorch graph-convolution script (Kipf & Welling's two-layer GCN): the normalized
adjacency D^-1/2 (A + I) D^-1/2 is built with sparse_coo_tensor from an edge list and
torch.sparse.sum, each layer is torch.sparse.mm(adj, x @ W), then ReLU, dropout, log_softmax
and nll_loss on the masked training nodes, with Adam and weight decay; run unchanged apart
from the import. On a stochastic block model (3 communities, features weakly tied to the
community) the loss falls and the test accuracy is far above chance; the sparse product and
its gradients equal the dense adjacency's."""
import numpy as np

import dtrain as torch
import dtrain.nn as nn
import dtrain.nn.functional as F


def stochastic_block_model(sizes, p_in, p_out, num_features, generator):
    labels = torch.cat([torch.full((n,), c, dtype=torch.long) for c, n in enumerate(sizes)])
    num_nodes = labels.numel()
    probs = torch.where(labels[:, None] == labels[None, :], p_in, p_out)
    upper = torch.triu(torch.rand(num_nodes, num_nodes, generator=generator) < probs, diagonal=1)
    edge_index = upper.nonzero().t()
    edge_index = torch.cat([edge_index, edge_index[[1, 0]]], dim=1)  # undirected
    centers = torch.randn(len(sizes), num_features, generator=generator)
    features = centers[labels] + 2.0 * torch.randn(num_nodes, num_features, generator=generator)
    return edge_index, features, labels


def normalized_adjacency(edge_index, num_nodes):
    nodes = torch.arange(num_nodes)
    edge_index = torch.cat([edge_index, torch.stack([nodes, nodes])], dim=1)  # A + I
    ones = torch.ones(edge_index.size(1))
    adj = torch.sparse_coo_tensor(edge_index, ones, (num_nodes, num_nodes))
    deg_inv_sqrt = torch.sparse.sum(adj, dim=1).to_dense().pow(-0.5)
    row, col = edge_index
    values = deg_inv_sqrt[row] * deg_inv_sqrt[col]
    return torch.sparse_coo_tensor(edge_index, values, (num_nodes, num_nodes)).coalesce()


class GraphConvolution(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x, adj):
        return torch.sparse.mm(adj, x @ self.weight) + self.bias


class GCN(nn.Module):
    def __init__(self, nfeat, nhid, nclass, dropout=0.5):
        super().__init__()
        self.gc1 = GraphConvolution(nfeat, nhid)
        self.gc2 = GraphConvolution(nhid, nclass)
        self.dropout = dropout

    def forward(self, x, adj):
        x = F.relu(self.gc1(x, adj))
        x = F.dropout(x, self.dropout, training=self.training)
        return F.log_softmax(self.gc2(x, adj), dim=1)


def _graph(seed=0):
    g = torch.Generator().manual_seed(seed)
    edge_index, features, labels = stochastic_block_model([40, 40, 40], 0.15, 0.01, 16, g)
    return edge_index, features, labels, normalized_adjacency(edge_index, labels.numel())


def test_gcn_on_a_stochastic_block_model_learns():
    torch.manual_seed(0)
    edge_index, features, labels, adj = _graph()
    perm = torch.randperm(labels.numel())
    idx_train = torch.cat([perm[labels[perm] == c][:8] for c in range(3)])
    test_mask = torch.ones(labels.numel(), dtype=torch.bool)
    test_mask[idx_train] = False

    model = GCN(features.size(1), 16, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    losses = []
    for epoch in range(100):
        model.train()
        optimizer.zero_grad()
        output = model(features, adj)
        loss = F.nll_loss(output[idx_train], labels[idx_train])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    model.eval()
    with torch.no_grad():
        pred = model(features, adj).argmax(dim=1)
    test_acc = (pred[test_mask] == labels[test_mask]).float().mean().item()
    assert losses[-1] < 0.2 * losses[0]
    assert test_acc > 0.85  # chance is 1/3

    # the same architecture without the graph (adjacency = identity) does far worse: the
    # features alone are too noisy, so the GCN's accuracy comes from propagation
    torch.manual_seed(0)
    eye = torch.eye(labels.numel()).to_sparse()
    mlp = GCN(features.size(1), 16, 3)
    optimizer = torch.optim.Adam(mlp.parameters(), lr=0.01, weight_decay=5e-4)
    for epoch in range(100):
        optimizer.zero_grad()
        F.nll_loss(mlp(features, eye)[idx_train], labels[idx_train]).backward()
        optimizer.step()
    mlp.eval()
    with torch.no_grad():
        mlp_acc = (mlp(features, eye).argmax(1)[test_mask] == labels[test_mask]).float().mean()
    assert test_acc > mlp_acc.item() + 0.15


def test_normalized_adjacency_has_the_exact_entries():
    edge_index, _, labels, adj = _graph()
    n = labels.numel()
    a = np.eye(n)
    a[edge_index[0].numpy(), edge_index[1].numpy()] = 1.0
    d = a.sum(1)
    expected = a / np.sqrt(d[:, None] * d[None, :])
    assert adj.is_sparse and adj.layout == torch.sparse_coo and adj.is_coalesced()
    assert adj._nnz() == int((a != 0).sum())
    np.testing.assert_allclose(adj.to_dense().numpy(), expected, rtol=1e-6)


def test_sparse_mm_and_its_gradients_equal_the_dense_adjacency():
    torch.manual_seed(0)
    _, features, labels, adj = _graph()
    dense_adj = adj.to_dense()
    h = torch.randn(labels.numel(), 5)
    np.testing.assert_allclose(torch.sparse.mm(adj, h).numpy(), (dense_adj @ h).numpy(),
                               rtol=1e-5, atol=1e-6)

    model = GCN(features.size(1), 8, 3, dropout=0.0)
    grads = []
    for a in (adj, dense_adj):
        model.zero_grad()
        F.nll_loss(model(features, a), labels).backward()
        grads.append([p.grad.numpy().copy() for p in model.parameters()])
    for sparse_grad, dense_grad in zip(*grads):
        np.testing.assert_allclose(sparse_grad, dense_grad, rtol=1e-4, atol=1e-6)
