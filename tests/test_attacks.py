"""Tests of arnas_ray.attacks: contract over the registry, torchattacks parity, properties."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from arnas_ray._config import from_dict, to_dict
from arnas_ray.attacks import (
    ATTACK_KINDS,
    ATTACKS,
    PRESETS,
    AttackSpec,
    MissingAutoAttackError,
    attack,
    autoattack,
    fgsm,
    pgd,
    pgd_groups,
    robust_accuracy,
)
from arnas_ray.errors import SpecError

torchattacks = pytest.importorskip("torchattacks")

N_CLASSES = 10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_net(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Two conv layers with batch norm on 3x8x8 inputs, 10 classes."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),  # [N, 8, 4, 4]
        nn.ReLU(),
        nn.Flatten(),  # [N, 128]
        nn.Linear(8 * 4 * 4, N_CLASSES),
    )
    with torch.no_grad():  # make the batch norm running statistics non-trivial
        net.train()(torch.rand(64, 3, 8, 8))
    return net.to(dtype).eval()


def batch(n: int = 16, seed: int = 1, dtype: torch.dtype = torch.float32, model=None):
    """Inputs in [0, 1] and, with a model, its own clean predictions as labels (100% clean)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g, dtype=dtype)
    if model is None:
        y = torch.randint(0, N_CLASSES, (n,), generator=g)
    else:
        with torch.no_grad():
            y = model(x).argmax(1)
    return x, y


class TupleNet(nn.Module):
    """Returns (logits, aux) like a DARTS network with an auxiliary head."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        return out, out.detach() * 0


class Exploding(nn.Module):
    """Raises on the k-th forward."""

    def __init__(self, net: nn.Module, k: int) -> None:
        super().__init__()
        self.net, self.k, self.calls = net, k, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.k:
            raise RuntimeError("boom")
        return self.net(x)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linf(a, b) -> float:
    return (a - b).abs().max().item()


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


FAST = {  # fast specs for the contract tests, one per registered kind
    "fgsm": AttackSpec(kind="fgsm"),
    "pgd": AttackSpec(kind="pgd", steps=5, restarts=2),
    "autoattack": AttackSpec(kind="autoattack", version="custom", aa_attacks=("fab-t", "apgd-ce")),
}
AA_FAST = {"n_iter": 5, "n_queries": 20}


def run(kind: str, model, x, y, spec=None, generator=None):
    spec = spec or FAST[kind]
    if kind == "autoattack":
        return autoattack(model, x, y, spec, generator=generator, **AA_FAST)
    return ATTACKS[kind](model, x, y, spec, generator=generator)


def test_registry_matches_kinds():
    assert ATTACK_KINDS == tuple(sorted(ATTACKS))  # derived from the registry, not a second list
    assert set(FAST) == set(ATTACKS)
    with pytest.raises(KeyError, match="valid: \\['autoattack', 'fgsm', 'pgd'\\]"):
        ATTACKS.get_or_raise("cw")


# ------------------------------------------------------------------ the contract, every attack


@pytest.mark.parametrize("kind", ATTACK_KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_ball_clip_shape_detached(kind, dtype):
    model = tiny_net(dtype=dtype)
    x, y = batch(dtype=dtype, model=model)
    spec = dataclasses.replace(FAST[kind], eps=4 / 255)
    x_adv = run(kind, model, x, y, spec, gen(0))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad and x_adv.grad_fn is None
    assert linf(x_adv, x) <= spec.eps + 1e-7
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert linf(x_adv, x) > spec.eps / 2  # it did move
    assert accuracy(model, x_adv, y) < 1.0  # and it hurts (clean accuracy is 1 by construction)


@pytest.mark.parametrize("kind", ATTACK_KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_contract_mode_and_param_grads_untouched(kind, mode):
    model = tiny_net()
    x, y = batch(model=model)
    model.train(mode == "train")
    model[0].weight.grad = torch.full_like(model[0].weight, 3.0)  # a pre-existing gradient
    flags = [p.requires_grad for p in model.parameters()]
    run(kind, model, x, y, generator=gen(0))
    assert all(m.training == (mode == "train") for m in model.modules())
    assert torch.equal(model[0].weight.grad, torch.full_like(model[0].weight, 3.0))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "0.weight")
    assert [p.requires_grad for p in model.parameters()] == flags


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_contract_tuple_output_model(kind):
    model = tiny_net()
    x, y = batch(model=model)
    plain = run(kind, model, x, y, generator=gen(3))
    wrapped = run(kind, TupleNet(model), x, y, generator=gen(3))
    assert torch.equal(plain, wrapped)


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_contract_deterministic_with_seeded_generator(kind):
    model = tiny_net()
    x, y = batch(model=model)
    state = torch.get_rng_state()
    a = run(kind, model, x, y, generator=gen(5))
    b = run(kind, model, x, y, generator=gen(5))
    assert torch.equal(a, b)
    if kind == "autoattack":  # AutoAttack reseeds the global RNG; the adapter restores it
        assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kind", ATTACK_KINDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_contract_model_raising_mid_attack_keeps_state(kind, mode):
    net = tiny_net()
    x, y = batch(model=net)
    model = Exploding(net, k=1 if kind == "fgsm" else 3).train(mode == "train")
    with pytest.raises(RuntimeError, match="boom"):
        run(kind, model, x, y, dataclasses.replace(FAST[kind], steps=5), gen(0))
    assert all(m.training == (mode == "train") for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_contract_under_no_grad_and_empty_batch(kind):
    model = tiny_net()
    x, y = batch(model=model)
    with torch.no_grad():  # evaluation loops call attacks under no_grad
        x_adv = run(kind, model, x, y, generator=gen(0))
    assert linf(x_adv, x) > 0
    empty = run(kind, model, x[:0], y[:0], generator=gen(0))
    assert empty.shape == (0, 3, 8, 8)


# ------------------------------------------------------------------ parity with torchattacks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps", [1, 10])
def test_pgd_equals_torchattacks_same_global_seed(dtype, steps):
    model = tiny_net(dtype=dtype)
    x, y = batch(n=32, dtype=dtype, model=model)
    spec = AttackSpec(kind="pgd", steps=steps)
    ref_atk = torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=steps, random_start=True)
    torch.manual_seed(123)
    ref = ref_atk(x, y)
    torch.manual_seed(123)  # without a generator we draw the start exactly as torchattacks
    ours = pgd(model, x, y, spec)
    assert linf(ours, ref) <= 1e-6
    assert accuracy(model, ours, y) == accuracy(model, ref, y)
    assert not model.training


def test_pgd_equals_torchattacks_with_x_init():
    model = tiny_net()
    x, y = batch(n=32, model=model)
    spec = PRESETS["pgd20"]
    torch.manual_seed(7)
    ref = torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=20)(x, y)
    torch.manual_seed(7)  # replicate torchattacks' start, hand it over explicitly
    start = torch.clamp(x + torch.empty_like(x).uniform_(-spec.eps, spec.eps), 0, 1)
    ours = pgd(model, x, y, spec, generator=gen(99), x_init=start)
    assert linf(ours, ref) <= 1e-6
    assert accuracy(model, ours, y) == accuracy(model, ref, y)


def test_robust_accuracy_is_the_accuracy_on_the_attacked_batches():
    model = tiny_net()
    x, y = batch(n=32, model=model)
    whole = accuracy(model, fgsm(model, x, y, PRESETS["fgsm"]), y)
    assert 0.0 < whole < 1.0  # FGSM flips some, not all: the comparison means something
    assert robust_accuracy(model, x, y, PRESETS["fgsm"], batch_size=5) == pytest.approx(whole)
    assert robust_accuracy(model, x[:0], y[:0], PRESETS["fgsm"]) != robust_accuracy(
        model, x[:0], y[:0], PRESETS["fgsm"])  # nan for no examples
    with pytest.raises(ValueError, match=r"y must have shape \[N\]=\(32,\)"):
        robust_accuracy(model, x, y[:3], PRESETS["fgsm"])


def test_pgd_without_random_start_equals_torchattacks():
    model = tiny_net(dtype=torch.float64)
    x, y = batch(dtype=torch.float64, model=model)
    spec = AttackSpec(steps=10, random_start=False)
    ref = torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=10, random_start=False)(x, y)
    assert linf(pgd(model, x, y, spec), ref) <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fgsm_equals_torchattacks(dtype):
    model = tiny_net(dtype=dtype)
    x, y = batch(n=32, dtype=dtype, model=model)
    ref = torchattacks.FGSM(model, eps=PRESETS["fgsm"].eps)(x, y)
    ours = fgsm(model, x, y, PRESETS["fgsm"])
    assert linf(ours, ref) <= 1e-6
    assert accuracy(model, ours, y) == accuracy(model, ref, y)


# ------------------------------------------------------------------ properties of PGD


@pytest.mark.parametrize("seed", range(4))
def test_pgd_properties_over_seeds(seed):
    g = torch.Generator().manual_seed(100 + seed)
    eps = float(torch.empty(()).uniform_(1 / 255, 16 / 255, generator=g))
    steps = int(torch.randint(1, 8, (), generator=g))
    spec = AttackSpec(eps=eps, alpha=eps / 3, steps=steps)
    model = tiny_net(seed=seed)
    x, y = batch(n=24, seed=seed, model=model)
    x[:4] = 0.0  # examples on the clip boundary
    x[4:8] = 1.0
    x_adv = pgd(model, x, y, spec, generator=gen(seed))
    assert linf(x_adv, x) <= eps + 1e-7
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        adv = F.cross_entropy(model(x_adv), y)
    assert adv.item() >= clean.item()


def test_pgd_groups_equals_separate_attacks():
    model = tiny_net(seed=1)
    spec = AttackSpec(eps=8 / 255, alpha=2 / 255, steps=5)
    batches = [batch(n=12, seed=s, model=model) for s in (3, 4, 5)]
    xs, ys = [b[0] for b in batches], [b[1] for b in batches]
    g1, g2 = gen(7), gen(7)
    separate = [pgd(model, x, y, spec, generator=g1) for x, y in zip(xs, ys)]
    joint = pgd_groups(lambda batch_list: [model(x) for x in batch_list], xs, ys, spec, generator=g2)
    for a, b in zip(separate, joint):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="one restart"):
        pgd_groups(lambda b: [model(x) for x in b], xs, ys, dataclasses.replace(spec, restarts=2))
    with pytest.raises(ValueError, match="as many"):
        pgd_groups(lambda b: [model(x) for x in b], xs, ys[:2], spec)


def test_pgd_releases_each_steps_graph_before_the_next_forward():
    """A step's logits (and the graph behind them) are gone when the next step's forward
    starts: two graphs alive at once raised the search step's peak memory by ~25%."""
    import weakref

    model = tiny_net(seed=1)
    x, y = batch(n=8, seed=3, model=model)
    previous: list[weakref.ref[torch.Tensor]] = []
    alive_at_call: list[bool] = []

    def forward(batch_list: list[torch.Tensor]) -> list[torch.Tensor]:
        alive_at_call.append(any(r() is not None for r in previous))
        out = [model(t) for t in batch_list]
        previous[:] = [weakref.ref(o) for o in out]
        return out

    pgd_groups(forward, [x, x.clone()], [y, y], AttackSpec(eps=8 / 255, alpha=2 / 255, steps=3), generator=gen(0))
    pgd(lambda t: forward([t])[0], x, y, AttackSpec(eps=8 / 255, alpha=2 / 255, steps=3), generator=gen(0))
    assert len(alive_at_call) == 6 and not any(alive_at_call)


def test_pgd_groups_through_supernet_forward_groups():
    from arnas_ray.space import Layout, Supernet

    torch.manual_seed(0)
    net = Supernet(Layout.preset("arnas"), C=4, num_classes=4, cells=3).double().train()
    spec = AttackSpec(eps=8 / 255, alpha=2 / 255, steps=3)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    ys = [torch.randint(0, 4, (4,), generator=g) for _ in range(2)]
    g1 = gen(1)
    separate = [pgd(net, x, y, spec, generator=g1) for x, y in zip(xs, ys)]
    joint = pgd_groups(net.forward_groups, xs, ys, spec, generator=gen(1))
    for a, b in zip(separate, joint):
        assert torch.allclose(a, b, atol=1e-12)


def test_pgd_random_start_is_uniform_in_ball_and_generator_device():
    model = tiny_net()
    x = torch.full((64, 3, 8, 8), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    spec = AttackSpec(steps=0)  # random start only
    x0 = pgd(model, x, y, spec, generator=gen(0))
    delta = x0 - x
    assert delta.abs().max().item() <= spec.eps + 1e-7
    assert delta.min().item() < -0.9 * spec.eps and delta.max().item() > 0.9 * spec.eps
    assert abs(delta.mean().item()) < 0.05 * spec.eps
    assert not torch.equal(x0, pgd(model, x, y, spec, generator=gen(1)))
    x_nostart = pgd(model, x, y, AttackSpec(steps=0, random_start=False), generator=gen(0))
    assert torch.equal(x_nostart, x)


def test_pgd_restarts_never_lower_success():
    model = tiny_net()
    x, y = batch(n=64, model=model)
    base = AttackSpec(eps=2 / 255, alpha=0.5 / 255, steps=2)
    fooled = []
    for restarts in (1, 2, 4):
        x_adv = pgd(model, x, y, dataclasses.replace(base, restarts=restarts), generator=gen(0))
        with torch.no_grad():
            fooled.append(model(x_adv).argmax(1) != y)
        assert linf(x_adv, x) <= base.eps + 1e-7
    assert 0 < fooled[0].sum() < len(y)  # the weak attack leaves room to improve
    assert bool((fooled[1] >= fooled[0]).all()) and bool((fooled[2] >= fooled[1]).all())
    assert fooled[2].sum() > fooled[0].sum()


def test_pgd_restart_keeps_highest_loss_when_none_fools():
    model = tiny_net()
    x, y = batch(n=32, model=model)
    spec = AttackSpec(eps=0.05 / 255, alpha=0.02 / 255, steps=1)  # too weak to fool anyone

    def loss(x_adv):
        with torch.no_grad():
            return F.cross_entropy(model(x_adv), y, reduction="none")

    one = loss(pgd(model, x, y, spec, generator=gen(0)))
    three = loss(pgd(model, x, y, dataclasses.replace(spec, restarts=3), generator=gen(0)))
    assert bool((three >= one).all()) and bool((three > one).any())


def test_robust_accuracy_batched_matches_one_batch():
    model = tiny_net()
    x, y = batch(n=40, model=model)
    spec = AttackSpec(eps=2 / 255, steps=5, random_start=False)
    whole = robust_accuracy(model, x, y, spec, batch_size=40)
    assert robust_accuracy(model, x, y, spec, batch_size=7) == pytest.approx(whole)
    assert robust_accuracy(model, x, y, PRESETS["fgsm"]) >= robust_accuracy(
        model, x, y, PRESETS["pgd10"], generator=gen(0)
    )
    assert 0.0 <= whole < 1.0


# ------------------------------------------------------------------ AutoAttack adapter


def test_autoattack_beats_or_matches_pgd20():
    model = tiny_net()
    x, y = batch(n=16, model=model)
    eps = 3 / 255
    pgd_acc = robust_accuracy(model, x, y, AttackSpec(eps=eps, steps=20), generator=gen(0))
    spec = AttackSpec(kind="autoattack", eps=eps, version="custom", aa_attacks=("apgd-ce", "apgd-t"))
    x_adv = autoattack(model, x, y, spec, seed=0, n_iter=20)
    aa_acc = accuracy(model, x_adv, y)
    assert linf(x_adv, x) <= eps + 1e-7
    assert 0.0 < pgd_acc < 1.0  # a non-trivial comparison
    assert aa_acc <= pgd_acc


def test_autoattack_other_clip_range_rescales():
    model = tiny_net()
    x, y = batch(n=16, model=model)
    xs = x * 2 - 1  # a [-1, 1] pixel space: the model sees (xs + 1) / 2
    spec = AttackSpec(kind="autoattack", eps=4 / 255, clip=(-1.0, 1.0), version="custom",
                      aa_attacks=("apgd-ce",))

    def shifted(z):
        return model((z + 1) / 2)

    x_adv = autoattack(shifted, xs, y, spec, n_iter=5)
    assert linf(x_adv, xs) <= spec.eps + 1e-6 and linf(x_adv, xs) > spec.eps / 2
    assert x_adv.min().item() >= -1.0 and x_adv.max().item() <= 1.0


class _FakeAutoAttack:
    calls: list[dict] = []

    def __init__(self, model, *, attacks=None, device="cpu", eps=0.3, norm="Linf", seed=None,
                 version="standard"):
        self.model = model
        type(self).calls.append(
            dict(attacks=attacks, device=device, eps=eps, norm=norm, seed=seed, version=version)
        )

    def run_standard_evaluation(self, x, y, *, batch_size=250):
        logits = self.model(x)  # the wrapper strips tuples
        assert isinstance(logits, torch.Tensor)
        return (x + 0.5).clamp(0, 1), y  # far outside the ball: the adapter projects


def test_autoattack_standard_through_fake_package(monkeypatch):
    _FakeAutoAttack.calls.clear()
    monkeypatch.setitem(sys.modules, "pyautoattack", types.SimpleNamespace(AutoAttack=_FakeAutoAttack))
    model = tiny_net().train()
    x, y = batch(n=4, model=model)
    x_adv = attack(TupleNet(model), x, y, PRESETS["aa"], generator=gen(0))
    (call,) = _FakeAutoAttack.calls
    assert call["version"] == "standard" and call["attacks"] is None and call["norm"] == "Linf"
    assert call["eps"] == pytest.approx(PRESETS["aa"].eps) and isinstance(call["seed"], int)
    assert linf(x_adv, x) <= PRESETS["aa"].eps + 1e-7
    assert model.training
    autoattack(model, x, y, PRESETS["aa"], attacks=["apgd-ce", "square"], seed=3)
    assert _FakeAutoAttack.calls[-1]["version"] == "custom"
    assert _FakeAutoAttack.calls[-1]["attacks"] == ["apgd-ce", "square"]
    assert _FakeAutoAttack.calls[-1]["seed"] == 3
    with pytest.raises(SpecError, match="aa_attacks"):
        autoattack(model, x, y, PRESETS["aa"], attacks=["cw"])


def test_autoattack_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    model = tiny_net()
    x, y = batch(n=4)
    with pytest.raises(MissingAutoAttackError, match=r"pip install 'arnas-ray\[attacks\]'") as info:
        attack(model, x, y, PRESETS["aa"])
    assert isinstance(info.value, ImportError)


# ------------------------------------------------------------------ AttackSpec


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"eps": 0.0}, "eps"),
        ({"eps": -0.1}, "eps"),
        ({"eps": float("nan")}, "eps"),
        ({"alpha": 0.0}, "alpha"),
        ({"steps": -1}, "steps"),
        ({"restarts": 0}, "restarts"),
        ({"restarts": 2, "random_start": False}, "restarts"),
        ({"kind": "cw"}, "kind"),
        ({"clip": (1.0, 0.0)}, "clip"),
        ({"clip": (0.5, 0.5)}, "clip"),
        ({"norm": "l3"}, "norm"),
        ({"version": "fast"}, "version"),
        ({"aa_attacks": ("apgd-ce",)}, "aa_attacks"),
        ({"version": "custom"}, "aa_attacks"),
        ({"version": "custom", "aa_attacks": ("cw",)}, "aa_attacks[0]"),
    ],
)
def test_spec_validation_names_the_field(changes, field):
    with pytest.raises(SpecError) as info:
        AttackSpec(**changes)
    assert info.value.field == field
    assert field.split("[")[0] in str(info.value)


def test_spec_l2_is_refused_clearly():
    with pytest.raises(SpecError, match="not implemented") as info:
        AttackSpec(norm="l2")
    assert info.value.field == "norm"


def test_spec_messages_name_value_and_allowed_set():
    with pytest.raises(SpecError, match=r"unknown value 'cw'; expected one of \('autoattack', 'fgsm', 'pgd'\)"):
        AttackSpec(kind="cw")
    with pytest.raises(SpecError, match="eps=-0.1"):
        AttackSpec(eps=-0.1)


def test_spec_round_trips_through_dict_with_fractions():
    spec = from_dict(AttackSpec, {"kind": "pgd", "eps": "8/255", "alpha": "2/255", "steps": 20})
    assert spec == PRESETS["pgd20"]
    assert from_dict(AttackSpec, to_dict(PRESETS["aa"])) == PRESETS["aa"]
    with pytest.raises(SpecError, match="steps"):
        from_dict(AttackSpec, {"steps": -3})


def test_presets_follow_the_arnas_protocol():
    assert set(PRESETS) == {"fgsm", "pgd7", "pgd10", "pgd20", "pgd100", "aa"}
    assert all(spec.eps == pytest.approx(8 / 255) for spec in PRESETS.values())
    assert PRESETS["fgsm"].kind == "fgsm" and not PRESETS["fgsm"].random_start
    for name, steps in [("pgd7", 7), ("pgd10", 10), ("pgd20", 20), ("pgd100", 100)]:
        spec = PRESETS[name]
        assert (spec.kind, spec.steps, spec.random_start) == ("pgd", steps, True)
        assert spec.alpha == pytest.approx(2 / 255)
    assert PRESETS["aa"].kind == "autoattack" and PRESETS["aa"].version == "standard"


def test_bad_inputs_are_refused():
    model = tiny_net()
    x, y = batch(n=4)
    with pytest.raises(ValueError, match="y must have shape"):
        pgd(model, x, y[:3])
    with pytest.raises(ValueError, match="floating"):
        pgd(model, (x * 255).long(), y)
    with pytest.raises(ValueError, match="x_init"):
        pgd(model, x, y, x_init=x[:2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_inputs_matches_cpu_start():
    model = tiny_net(dtype=torch.float64)
    x, y = batch(dtype=torch.float64, model=model)
    spec = AttackSpec(steps=0)  # the random start alone
    cpu = pgd(model, x, y, spec, generator=gen(4))
    cuda = pgd(model.cuda(), x.cuda(), y.cuda(), spec, generator=gen(4))
    assert cuda.device.type == "cuda" and torch.equal(cuda.cpu(), cpu)
    x_adv = pgd(model, x.cuda(), y.cuda(), PRESETS["pgd10"], generator=gen(4))
    assert linf(x_adv.cpu(), x) <= PRESETS["pgd10"].eps + 1e-7
    g = torch.Generator(device="cuda").manual_seed(4)
    assert torch.equal(pgd(model, x.cuda(), y.cuda(), spec, generator=g),
                       pgd(model, x.cuda(), y.cuda(), spec, generator=g.manual_seed(4)))
    x_aa = autoattack(model, x.cuda(), y.cuda(), FAST["autoattack"], **AA_FAST)
    assert x_aa.device.type == "cuda" and linf(x_aa.cpu(), x) <= FAST["autoattack"].eps + 1e-7


def test_attacks_accept_non_contiguous_inputs_and_keep_their_layout():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    x = torch.rand(3, 4, 4, 6)[..., :4].permute(0, 3, 1, 2)  # [3, 4, 4, 4], non-contiguous
    y = torch.tensor([0, 1, 2])
    spec = AttackSpec(steps=2)
    out = pgd(model, x, y, spec, generator=gen(0))
    assert out.shape == x.shape and out.is_contiguous()
    assert (out - x).abs().max() <= spec.eps + 1e-7
    flat = torch.rand(3, 6)[:, ::2]  # a non-contiguous 2-D batch [3, 3]
    assert not flat.is_contiguous()
    adv = pgd(nn.Linear(3, 2), flat, torch.tensor([0, 1, 0]), spec, generator=gen(0))
    assert adv.shape == (3, 3) and (adv - flat).abs().max() <= spec.eps + 1e-7
    xcl = torch.rand(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    conv = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(8, 2))
    assert pgd(conv, xcl, torch.tensor([0, 1]), spec, generator=gen(0)).is_contiguous(
        memory_format=torch.channels_last)
