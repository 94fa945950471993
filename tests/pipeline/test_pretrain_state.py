"""Resumable pretraining state: weights and AdamW moments round-trip through safetensors."""

import torch

from pipeline.pretrain_state import load_optimizer, load_weights, save_state


def test_state_round_trip(tmp_path):
    torch.manual_seed(0)
    model, head = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-2)
    for _ in range(3):
        loss = head(model(torch.randn(5, 4))).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_state(tmp_path, model, {"h": head}, opt, {"stage": 2, "step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.safetensors", "model.safetensors",
                                                          "optimizer.json", "optimizer.safetensors", "state.json"]
    model2, head2 = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    state = load_weights(tmp_path, model2, {"h": head2})
    assert state == {"stage": 2, "step": 3}
    assert torch.equal(model2.weight, model.weight) and torch.equal(head2.bias, head.bias)
    opt2 = torch.optim.AdamW([*model2.parameters(), *head2.parameters()], lr=1e-2)
    assert load_optimizer(tmp_path, opt2)
    a, b = opt.state_dict(), opt2.state_dict()
    for i, st in a["state"].items():
        for k, v in st.items():
            assert torch.equal(b["state"][i][k], v), (i, k)
    # the restored optimizer continues exactly like the original
    x = torch.randn(5, 4)
    for m, h, o in ((model, head, opt), (model2, head2, opt2)):
        loss = h(m(x)).pow(2).sum()
        o.zero_grad()
        loss.backward()
        o.step()
    assert torch.equal(model.weight, model2.weight)


def test_no_optimizer_is_not_an_error(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_state(tmp_path, model, {}, None, {"stage": 3})
    assert not load_optimizer(tmp_path, torch.optim.AdamW(model.parameters()))
