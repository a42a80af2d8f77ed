"""Unit tests of task parameters, splits and randomization (pure functions)."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from metagrasp.errors import TaskParamError, UnknownNameError
from metagrasp.sim import scene
from metagrasp.sim.objects import MESHES, SHAPES, half_extents
from metagrasp.sim.tasks import (
    HELD_OUT_SHAPES,
    NominalDynamics,
    TaskParams,
    apply_task,
    in_train_support,
    is_feasible,
    sample_task,
    split_tasks,
)


def test_sample_task_is_pure_and_seeded():
    a = [sample_task(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert sample_task(np.random.default_rng(8)) != a[0]


def test_splits_are_fixed_and_never_overlap():
    test, hard = split_tasks("test"), split_tasks("hard")
    assert len(test) >= 40 and len(hard) >= 40
    assert test == split_tasks("test")  # deterministic
    assert not any(in_train_support(t) for t in test + hard)
    assert set(t.task_id for t in test).isdisjoint(t.task_id for t in hard)
    rng = np.random.default_rng(0)
    train = [sample_task(rng, "train") for _ in range(2000)]
    assert all(in_train_support(t) for t in train)
    assert not any(t.shape in HELD_OUT_SHAPES for t in train)
    assert set(train).isdisjoint(test + hard)
    # test holds out shapes; hard goes outside the train ranges.
    assert any(t.shape in HELD_OUT_SHAPES for t in test)
    assert all(
        t.mass > 0.4 or t.friction < 0.35 or t.crush_limit < 1.4 * t.required_grip_force()
        for t in hard
    )


def test_val_is_a_fixed_draw_of_the_training_distribution():
    val = split_tasks("val")
    assert len(val) == 48 and val == split_tasks.__wrapped__("val")  # deterministic
    assert all(in_train_support(t) for t in val)  # train tasks, never held-out ones
    assert set(val).isdisjoint(split_tasks("test") + split_tasks("hard"))
    assert [t.task_id for t in val] == [f"val-{i:03d}" for i in range(48)]
    assert len({t.shape for t in val}) >= 6 and 0.2 < np.mean([t.fragile for t in val]) < 0.8
    with pytest.raises(UnknownNameError, match="'val'"):
        split_tasks("train")


def test_every_sampled_task_is_feasible_and_mixes_fragile_and_robust():
    rng = np.random.default_rng(1)
    tasks = [sample_task(rng, s) for s in ("train", "val", "test", "hard") for _ in range(300)]
    assert all(is_feasible(t) for t in tasks)
    fragile = np.mean([t.fragile for t in tasks])
    assert 0.2 < fragile < 0.8


def test_dict_round_trip_through_json():
    t = split_tasks("test")[3]
    assert TaskParams.from_dict(json.loads(json.dumps(t.to_dict()))) == t


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"mass": -0.1}, "mass"),
        ({"mass": float("nan")}, "mass"),
        ({"friction": 5.0}, "friction"),
        ({"crush_limit": 0.0}, "crush_limit"),
        ({"latency": 3}, "latency"),
        ({"shape": "banana"}, "shape"),
        ({"size": [0.2, 0.02, 0.02]}, "size"),
        ({"com_offset": [0.5, 0, 0]}, "com_offset"),
        ({"obs_noise": 1.0}, "obs_noise"),
    ],
)
def test_out_of_range_values_name_the_field_and_range(change, field):
    data = TaskParams().to_dict() | change
    with pytest.raises(TaskParamError) as err:
        TaskParams.from_dict(data)
    msg = str(err.value)
    assert field in msg
    assert "[" in msg or "allowed" in msg or "one of" in msg or "needs" in msg


def test_malformed_task_dicts_are_rejected_clearly():
    with pytest.raises(TaskParamError, match="unknown task field"):
        TaskParams.from_dict({"mass": 0.1, "colour": "red"})
    with pytest.raises(TaskParamError, match="'mass'"):
        TaskParams.from_dict({"mass": "heavy"})
    with pytest.raises(TaskParamError, match="'size'"):
        TaskParams.from_dict({"size": [0.02, 0.02]})
    with pytest.raises(TaskParamError, match="'latency'"):
        TaskParams.from_dict({"latency": 1.5})
    with pytest.raises(TaskParamError, match="dict"):
        TaskParams.from_dict([1, 2, 3])


def test_unknown_split_is_named():
    with pytest.raises(UnknownNameError, match="allowed"):
        sample_task(np.random.default_rng(0), "validation")
    with pytest.raises(UnknownNameError, match="distribution"):
        split_tasks("train")


@given(
    mass=st.floats(0.005, 2.0),
    friction=st.floats(0.05, 2.0),
    crush=st.floats(0.5, 1000.0),
    latency=st.sampled_from([0, 1, 2]),
)
def test_valid_values_round_trip(mass, friction, crush, latency):
    t = TaskParams(mass=mass, friction=friction, crush_limit=crush, latency=latency)
    assert TaskParams.from_dict(t.to_dict()) == t
    assert np.all(np.isfinite(t.privileged_vector()))


@given(mass=st.one_of(st.floats(max_value=0.0049), st.floats(min_value=2.01)))
def test_invalid_mass_always_rejected(mass):
    with pytest.raises(TaskParamError, match="mass"):
        TaskParams(mass=mass)


def test_apply_task_writes_the_model_without_compounding():
    model, h = scene.build_model()
    nominal = NominalDynamics.capture(model)
    t = TaskParams(
        shape="cylinder",
        size=(0.02, 0.03, 0.0),
        mass=0.3,
        friction=0.5,
        com_offset=(0.004, 0.0, -0.005),
        actuator_gain=1.2,
        damping=0.8,
    )
    for _ in range(2):  # applying twice must give the same model, not gain 1.44
        apply_task(model, t, h, nominal)
        gid = h.object_geoms["cylinder"]
        assert model.geom_contype[gid] == 1
        assert all(model.geom_contype[g] == 0 for s, g in h.object_geoms.items() if s != "cylinder")
        assert model.body_mass[h.object_body] == pytest.approx(0.3)
        np.testing.assert_allclose(model.body_ipos[h.object_body], (0.004, 0, -0.005))
        assert model.geom_friction[gid, 0] == pytest.approx(0.5)
        np.testing.assert_allclose(model.actuator_gainprm[:, 0], nominal.gainprm[:, 0] * 1.2)
        np.testing.assert_allclose(model.geom_size[gid, :2], (0.02, 0.03))


def test_shapes_fit_the_gripper():
    for mesh in MESHES:
        ext = mesh.half_extents
        assert min(ext[0], ext[1]) * 2 < 0.07
    for shape in SHAPES:
        t = sample_task(np.random.default_rng(SHAPES.index(shape)), "hard")
        assert min(half_extents(t.shape, t.size)[:2]) * 2 < 0.07
