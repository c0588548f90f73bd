import torch

from nge.arch import NGE
from nge.space import DEFAULT_TOPOLOGY


def test_nge_widths_match_spec():
    a = NGE()
    assert a.x_normal.shape == a.x_reduce.shape == (6, 64)
    assert [tuple(layer.weight.shape) for layer in a.gcn] == [(128, 64), (128, 128), (64, 128)]
    assert tuple(a.head.mlp[0].weight.shape) == (64, 128)  # concat(z_src, z_dst) = 128 -> 64
    assert tuple(a.head.mlp[2].weight.shape) == (64, 64)  # -> K = 64
    assert tuple(a.head.op_fc.weight.shape) == (7, 64)  # K -> O
    n_params = 2 * 6 * 64 + 64 * 128 + 128 * 128 + 128 * 64 + 128 * 64 + 64 * 64 + 64 * 7
    assert sum(p.numel() for p in a.parameters()) == n_params


def test_x_initialised_one_hot_per_cell_type():
    a = NGE()
    eye = torch.eye(6, 64)
    assert torch.equal(a.x_normal.data, eye) and torch.equal(a.x_reduce.data, eye)
    assert a.x_normal is not a.x_reduce


def test_a_hat_is_a_plus_identity_constant_buffer():
    a = NGE()
    expected = torch.tensor(DEFAULT_TOPOLOGY.adjacency()) + torch.eye(6)
    assert torch.allclose(a.a_hat, expected)
    assert a.a_hat[3, 0] == 0.25 and a.a_hat[3, 3] == 1.0 and a.a_hat[0, 3] == 0.0
    assert "a_hat" not in dict(a.named_parameters())


def test_gcn_follows_eq8():
    torch.manual_seed(0)
    a = NGE()
    h = a.x_normal
    for layer in a.gcn:
        h = torch.relu(a.a_hat @ h @ layer.weight.T)
    assert torch.allclose(a.node_embeddings()[0], h, atol=1e-6)


def test_p_shape_rows_sum_to_one_and_start_near_uniform():
    torch.manual_seed(0)
    p = NGE()()
    for m in (p.normal, p.reduce):
        assert m.shape == (14, 7)
        assert torch.allclose(m.sum(1), torch.ones(14), atol=1e-6)
        assert (m > 0).all()
        assert torch.allclose(m, torch.full_like(m, 1 / 7), atol=0.01)


def test_edge_embedding_puts_source_first():
    torch.manual_seed(0)
    a = NGE()
    z = a.node_embeddings()
    e = a.head.mlp(torch.cat([z[0, 0], z[0, 2]]))  # edge 0 -> 2 is row 0
    assert torch.allclose(torch.softmax(a.head.op_fc(e), -1), a().normal[0], atol=1e-6)
