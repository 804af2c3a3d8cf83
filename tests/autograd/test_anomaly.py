"""detect_anomaly: backward names the node that first returns a NaN gradient; Variable."""
import pytest

import dtrain as dt


def test_detect_anomaly_names_the_node_that_made_nan():
    x = dt.tensor([-1.0, 4.0], requires_grad=True)
    loss = (x.sqrt() * 2).sum()
    with dt.autograd.detect_anomaly():
        assert dt.autograd.is_anomaly_enabled()
        with pytest.raises(RuntimeError,
                           match="Function 'SqrtBackward0' returned nan values in its 0th output"):
            loss.backward()
    assert not dt.autograd.is_anomaly_enabled()
    y = dt.tensor([-1.0, 4.0], requires_grad=True)
    y.sqrt().sum().backward()  # off again: the NaN gradient just arrives
    assert y.grad.isnan().tolist() == [True, False]


def test_set_detect_anomaly_as_call_and_context():
    with dt.autograd.set_detect_anomaly(True):
        assert dt.autograd.is_anomaly_enabled() and dt.autograd.is_anomaly_check_nan_enabled()
        with dt.autograd.set_detect_anomaly(True, check_nan=False):
            assert not dt.autograd.is_anomaly_check_nan_enabled()
    assert not dt.autograd.is_anomaly_enabled()


def test_variable_is_the_old_name_of_a_tensor():
    t = dt.ones(2)
    v = dt.autograd.Variable(t, requires_grad=True)
    assert v.requires_grad and v.is_leaf and isinstance(t, dt.autograd.Variable)
    v.detach().add_(1)
    assert t.tolist() == [2.0, 2.0]  # shares t's data
