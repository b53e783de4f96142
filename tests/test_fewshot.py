import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from sklearn.neighbors import NearestCentroid

from ssltrace.analysis import fewshot_kernel
from ssltrace.analysis.fewshot import (
    ShotPlan,
    draw_shots,
    mean_offdiagonal,
    pairwise_prototype_errors,
    prototype_confusion,
)
from ssltrace.analysis.fewshot_kernel import (
    errors_from_signs,
    mean_weights,
    mean_weights_float64,
    reference_pairwise_errors,
)


def _random_classes(seed=0, sizes=(12, 15, 9, 20, 11), dim=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.2, size=(len(sizes), dim))
    labels = np.repeat(np.arange(len(sizes)) * 3 + 2, sizes)  # non-contiguous label values
    features = centres[np.repeat(np.arange(len(sizes)), sizes)] + rng.normal(size=(sum(sizes), dim))
    return features + 0.5, labels  # offset: cosine and sqeuclidean rank differently


# --- hand-built geometry ---------------------------------------------------------------


def test_tight_clusters_with_one_overlapping_pair():
    # A at (2,0); B and C both at (0,3): B and C tests are equidistant from both prototypes
    # (each tie counts half), A is never confused. Prototypes do not depend on the draw.
    features = np.array([[2.0, 0.0]] * 5 + [[0.0, 3.0]] * 5 + [[0.0, 3.0]] * 6)
    labels = np.repeat([0, 1, 2], [5, 5, 6])
    expected = np.array([[0, 0, 0], [0, 0, 0.5], [0, 0.5, 0]])
    for distance in ("sqeuclidean", "cosine"):
        errors = pairwise_prototype_errors(
            features, labels, shots=2, trials=7, distance=distance, device="cpu"
        )
        np.testing.assert_array_equal(errors, expected)
        confusion = prototype_confusion(features, labels, 2, 7, distance, device="cpu")
        np.testing.assert_array_equal(confusion, [[1, 0, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]])


def _line_plan():
    # 1-D: A = {0, 0, 0, 10}, B = {8, 8, 8, 8}, C = {-4, -4, -8}; one shot per class.
    features = np.array([0, 0, 0, 10, 8, 8, 8, 8, -4, -4, -8], dtype=float)[:, None]
    plan = ShotPlan(
        classes=np.array([0, 1, 2]),
        rows=np.arange(11),
        class_index=np.repeat([0, 1, 2], [4, 4, 3]),
        shots=np.array([[[3], [4], [8]], [[0], [5], [10]]]),
    )
    return features, plan


def test_exact_fractions_on_a_line():
    features, plan = _line_plan()
    # Trial 0: prototypes A=10, B=8, C=-4. A tests {0,0,0} lie nearer B (64 < 100) and
    #   nearer C (16 < 100): E(A,B)=1, E(A,C)=1. B tests sit on their prototype. C tests
    #   {-4,-8} are nearest to C=-4.
    # Trial 1: prototypes A=0, B=8, C=-8. A tests {0,0,10}: 10 is nearer B (4 < 100):
    #   E(A,B)=1/3; nothing nearer C: E(A,C)=0. C tests {-4,-4} are at 16 from both
    #   A=0 and C=-8: ties, E(C,A)=1/2; B=8 is at 144: E(C,B)=0.
    expected = np.array([[0, (1 + 1 / 3) / 2, (1 + 0) / 2], [0, 0, 0], [(0 + 0.5) / 2, 0, 0]])
    errors = pairwise_prototype_errors(features, distance="sqeuclidean", device="cpu", plan=plan)
    np.testing.assert_allclose(errors, expected, rtol=0, atol=1e-15)
    # Had the shot 10 of trial 0 been a test sample too, E(A,B) would be (3/4 + 1/4)/2.
    assert abs(errors[0, 1] - 0.5) > 0.1


def test_exact_confusion_on_a_line():
    features, plan = _line_plan()
    # Trial 0: all A tests nearest C; C tests nearest C. Trial 1: A tests 0,0 -> A and
    # 10 -> B; C tests -4,-4 tie between A and C (half each).
    expected = np.array([[1 / 3, 1 / 6, 1 / 2], [0, 1, 0], [1 / 4, 0, 3 / 4]])
    confusion = prototype_confusion(features, distance="sqeuclidean", device="cpu", plan=plan)
    np.testing.assert_allclose(confusion, expected, rtol=0, atol=1e-15)


def test_cosine_uses_direction_only():
    # A shots (1,0),(3,0) -> prototype direction (1,0); B shots (0,2),(0,1) -> (0,1).
    # A test (1,1) makes equal angles with both: a tie under cosine (1/2), but it is
    # nearer B's prototype (0,1.5) than A's (2,0) in squared Euclidean distance (1.25 < 2).
    # B test (1,3) is nearer (0,1) in angle and in distance.
    features = np.array([[1, 0], [3, 0], [1, 1], [0, 2], [0, 1], [1, 3]], dtype=float)
    plan = ShotPlan(
        classes=np.array([0, 1]),
        rows=np.arange(6),
        class_index=np.array([0, 0, 0, 1, 1, 1]),
        shots=np.array([[[0, 1], [3, 4]]]),
    )
    cosine = pairwise_prototype_errors(features, distance="cosine", device="cpu", plan=plan)
    sqeuclid = pairwise_prototype_errors(features, distance="sqeuclidean", device="cpu", plan=plan)
    np.testing.assert_array_equal(cosine, [[0, 0.5], [0, 0]])
    np.testing.assert_array_equal(sqeuclid, [[0, 1], [0, 0]])


# --- vectorised vs reference ---------------------------------------------------------------


@pytest.mark.parametrize("distance", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize("max_per_class", [None, 10])
def test_vectorised_equals_per_pair_loop(distance, max_per_class):
    features, labels = _random_classes()
    args = dict(shots=3, trials=9, distance=distance, max_per_class=max_per_class, seed=4)
    fast = pairwise_prototype_errors(features, labels, device="cpu", **args)
    same_shots = draw_shots(labels, 3, 9, max_per_class=max_per_class, seed=4)
    slow = reference_pairwise_errors(features, same_shots, distance)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)
    assert 0.01 < mean_offdiagonal(fast) < 0.5  # a non-trivial case


def test_batches_of_trials_give_the_same_result(monkeypatch):
    features, labels = _random_classes(seed=1)
    whole = pairwise_prototype_errors(features, labels, 2, 11, device="cpu")
    confusion = prototype_confusion(features, labels, 2, 11, device="cpu")
    monkeypatch.setattr(fewshot_kernel, "_BATCH_ELEMENTS", 1)  # one trial per batch
    monkeypatch.setattr(fewshot_kernel, "_BLOCK_ELEMENTS", 1)  # one sample per block
    monkeypatch.setattr(fewshot_kernel, "_CHUNK_ELEMENTS", 1)  # one sample per chunk
    np.testing.assert_array_equal(pairwise_prototype_errors(features, labels, 2, 11), whole)
    np.testing.assert_array_equal(prototype_confusion(features, labels, 2, 11), confusion)


# --- float32 scores with float64 recheck vs float64 throughout ------------------------------


@pytest.mark.parametrize("distance", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize("rule", ["sign", "nearest"])
def test_fast_path_equals_float64_reference_exactly(distance, rule):
    features, labels = _random_classes(seed=5, sizes=(30, 41, 25, 33), dim=40)
    features[::7] *= 1e3  # norms spread over three decades
    order = np.random.default_rng(0).permutation(len(labels))  # classes not contiguous
    features, labels = features[order], labels[order]
    plan = draw_shots(labels, shots=3, trials=12, max_per_class=35, seed=2)
    x = torch.from_numpy(features)
    fast = mean_weights(x, plan, distance, "cpu", rule)
    reference = mean_weights_float64(x, plan, distance, "cpu", rule)
    np.testing.assert_array_equal(fast, reference)


def _near_tie_plan(distance: str, seed: int = 0):
    """Classes A, B, C whose prototypes are fixed (identical shots): A at p_a, B at p_b, C at
    p_a as well (a duplicated prototype). Every test sample lies 1e-9 off the set of points
    equidistant from p_a and p_b, on a random side for A and C and on A's side for B: float64
    tells the sides apart, float32 cannot. Returns features, plan and the error matrix implied
    by the sides."""
    rng = np.random.default_rng(seed)
    dim, tests = 16, 100
    p_a = rng.normal(size=dim) + 3.0  # offset from the origin, as post-ReLU features are
    p_b = p_a + rng.normal(size=dim)
    if distance == "sqeuclidean":
        normal, through = p_b - p_a, (p_a + p_b) / 2
    else:  # equal angles: orthogonal to the difference of the unit vectors
        normal = p_b / np.linalg.norm(p_b) - p_a / np.linalg.norm(p_a)
        through = np.zeros(dim)
    normal /= np.linalg.norm(normal)
    toward_b = rng.integers(0, 2, size=(3, tests)).astype(bool)
    toward_b[1] = False  # all B samples nearer A (and C): E[B, A] = E[B, C] = 1
    blocks = []
    for side in toward_b:
        w = rng.normal(size=(tests, dim))
        on_set = through + w - np.outer(w @ normal, normal)
        blocks.append(on_set + 1e-9 * np.where(side, 1.0, -1.0)[:, None] * normal)
    features = np.concatenate(
        [
            np.stack([p_a, p_a]),
            blocks[0],
            np.stack([p_b, p_b]),
            blocks[1],
            np.stack([p_a, p_a]),
            blocks[2],
        ]
    )
    size = tests + 2
    plan = ShotPlan(
        classes=np.array([0, 1, 2]),
        rows=np.arange(3 * size),
        class_index=np.repeat([0, 1, 2], size),
        shots=np.array([[[0, 1], [size, size + 1], [2 * size, 2 * size + 1]]] * 2),
    )
    a_to_b, b_to_a, c_to_b = toward_b[0].mean(), 1 - toward_b[1].mean(), toward_b[2].mean()
    # A vs C and C vs A: identical prototypes, every comparison a tie (half an error);
    # B vs C is B vs A, since C's prototype is A's.
    expected = np.array([[0, a_to_b, 0.5], [b_to_a, 0, b_to_a], [0.5, c_to_b, 0]])
    return features, plan, expected


@pytest.mark.parametrize("distance", ["sqeuclidean", "cosine"])
def test_near_ties_are_rechecked_in_float64(distance):
    features, plan, expected = _near_tie_plan(distance)
    x = torch.from_numpy(features)
    stats = {}
    fast = errors_from_signs(mean_weights(x, plan, distance, "cpu", "sign", stats=stats))
    np.testing.assert_allclose(fast, expected, rtol=0, atol=1e-15)
    reference = errors_from_signs(mean_weights_float64(x, plan, distance, "cpu", "sign"))
    np.testing.assert_array_equal(fast, reference)
    public = pairwise_prototype_errors(features, distance=distance, device="cpu", plan=plan)
    np.testing.assert_array_equal(public, fast)
    assert stats == {"rows": 2 * 300, "rechecked": 2 * 300}  # every test sample, both trials
    # float32 alone cannot see the side (1e-9 is below its resolution): trusting it (bound 0,
    # only exact float32 ties rechecked) puts many B samples on the wrong side
    trusting = mean_weights(x, plan, distance, "cpu", "sign", tolerance=0.0)
    assert expected[1, 0] == 1.0 and errors_from_signs(trusting)[1, 0] < 0.9


@pytest.mark.parametrize("distance", ["sqeuclidean", "cosine"])
def test_near_ties_nearest_prototype_is_exact(distance):
    features, plan, expected = _near_tie_plan(distance, seed=1)
    x = torch.from_numpy(features)
    confusion = prototype_confusion(features, distance=distance, device="cpu", plan=plan)
    np.testing.assert_array_equal(
        confusion, mean_weights_float64(x, plan, distance, "cpu", "nearest")
    )
    # A samples: nearer B (toward_b), else a two-way tie between A and its duplicate C
    a_to_b = expected[0, 1]
    np.testing.assert_allclose(confusion[0], [(1 - a_to_b) / 2, a_to_b, (1 - a_to_b) / 2])
    np.testing.assert_allclose(confusion.sum(axis=1), 1.0, atol=1e-15)


def test_confusion_matches_sklearn_nearest_centroid_on_the_same_shots():
    features, labels = _random_classes(seed=2)
    plan = draw_shots(labels, shots=4, trials=5, seed=9)
    expected = np.zeros((5, 5))
    for t in range(plan.n_trials):
        shot_pos = plan.shots[t].ravel()
        test_pos = np.setdiff1d(np.arange(len(plan.rows)), shot_pos)
        clf = NearestCentroid().fit(features[shot_pos], plan.class_index[shot_pos])
        predicted = clf.predict(features[test_pos])
        expected += confusion_matrix(plan.class_index[test_pos], predicted, normalize="true")
    got = prototype_confusion(features, labels, 4, 5, "sqeuclidean", seed=9, device="cpu")
    np.testing.assert_allclose(got, expected / plan.n_trials, atol=1e-12)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)


def test_two_class_confusion_equals_pairwise_errors():
    features, labels = _random_classes(sizes=(14, 17))
    for distance in ("sqeuclidean", "cosine"):
        errors = pairwise_prototype_errors(features, labels, 3, 6, distance, device="cpu")
        confusion = prototype_confusion(features, labels, 3, 6, distance, device="cpu")
        np.testing.assert_allclose(confusion[[0, 1], [1, 0]], errors[[0, 1], [1, 0]], atol=1e-12)


def test_torch_and_float32_inputs_agree_with_numpy():
    features, labels = _random_classes(seed=3)
    reference = pairwise_prototype_errors(features, labels, 2, 5, device="cpu")
    from_torch = pairwise_prototype_errors(
        torch.from_numpy(features), torch.from_numpy(labels), 2, 5, device="cpu"
    )
    np.testing.assert_array_equal(from_torch, reference)
    single = pairwise_prototype_errors(features.astype(np.float32), labels, 2, 5, device="cpu")
    np.testing.assert_allclose(
        single,
        reference_pairwise_errors(features.astype(np.float32), draw_shots(labels, 2, 5)),
        atol=1e-12,
    )


# --- shots -----------------------------------------------------------------------------------


def test_shots_are_never_test_samples_in_expectation():
    # A = {0, 0, 0, 10}, B = {8, 8, 8, 8}, one shot. Shot 10 (p = 1/4): the three 0s are
    # nearer 8 -> error 1. Shot 0 (p = 3/4): of the tests {0, 0, 10} only 10 -> error 1/3.
    # E(A,B) = 1/4 + 3/4 * 1/3 = 1/2; if the shot were also tested it would be 3/8.
    features = np.array([0, 0, 0, 10, 8, 8, 8, 8], dtype=float)[:, None]
    labels = np.repeat([0, 1], 4)
    errors = pairwise_prototype_errors(features, labels, 1, 4000, seed=5, device="cpu")
    assert abs(errors[0, 1] - 0.5) < 0.025  # standard error 0.0046


def test_draw_shots_is_uniform_distinct_within_class_and_seeded():
    labels = np.repeat([4, 7, 9], [6, 8, 5])
    plan = draw_shots(labels, shots=3, trials=3000, seed=11)
    assert plan.shots.shape == (3000, 3, 3)
    np.testing.assert_array_equal(plan.classes, [4, 7, 9])
    chosen = plan.rows[plan.shots]
    assert np.all(labels[chosen] == np.array([4, 7, 9])[None, :, None])
    assert np.all(np.diff(np.sort(plan.shots, axis=2), axis=2) > 0)
    frequency = np.bincount(chosen.ravel(), minlength=len(labels)) / 3000
    expected = 3 / np.bincount(plan.class_index)[plan.class_index]
    np.testing.assert_allclose(frequency[plan.rows], expected, atol=0.04)
    again = draw_shots(labels, 3, 3000, seed=np.random.default_rng(11))
    np.testing.assert_array_equal(again.shots, plan.shots)
    assert not np.array_equal(draw_shots(labels, 3, 3000, seed=12).shots, plan.shots)


def test_max_per_class_takes_a_seeded_subset():
    labels = np.repeat([0, 1], [30, 7])
    plan = draw_shots(labels, shots=2, trials=4, max_per_class=10, seed=3)
    np.testing.assert_array_equal(plan.class_sizes, [10, 7])
    assert len(np.unique(plan.rows)) == 17 and np.all(labels[plan.rows] == [0] * 10 + [1] * 7)
    other = draw_shots(labels, shots=2, trials=4, max_per_class=10, seed=4)
    assert not np.array_equal(other.rows, plan.rows)


# --- validation --------------------------------------------------------------------------------


def test_too_many_shots_names_shots_and_smallest_class():
    features, labels = _random_classes(sizes=(10, 4, 6))
    with pytest.raises(ValueError, match=r"shots=4 .*smallest class has 4 samples"):
        pairwise_prototype_errors(features, labels, shots=4, trials=2)
    with pytest.raises(ValueError, match=r"max_per_class=3"):
        pairwise_prototype_errors(features, labels, shots=3, trials=2, max_per_class=3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(distance="euclid"), "distance must be one of"),
        (dict(shots=0), "shots must be a positive integer"),
        (dict(trials=2.5), "trials must be a positive integer"),
        (dict(labels=np.zeros(5, dtype=int)), "labels has 5 entries"),
        (dict(labels=np.zeros(44)), "labels must be an int array"),
        (dict(labels=np.zeros(44, dtype=int)), "at least 2 classes"),
        (dict(features=np.full((44, 3), np.nan)), "NaN"),
        (dict(features=np.zeros(44)), r"features must be a float array \[n, d\]"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(kwargs, message):
    features, labels = _random_classes(sizes=(20, 24))
    args = dict(features=features[:, :3], labels=labels, shots=2, trials=2) | kwargs
    with pytest.raises(ValueError, match=message):
        pairwise_prototype_errors(**args)


def test_hand_built_plan_is_checked():
    features, plan = _line_plan()
    with pytest.raises(ValueError, match=r"shots\[t, c\] must all be samples of class c"):
        ShotPlan(plan.classes, plan.rows, plan.class_index, plan.shots[:, [1, 0, 2]])
    with pytest.raises(ValueError, match="distinct"):
        ShotPlan(plan.classes, plan.rows, plan.class_index, np.array([[[0, 0], [4, 5], [8, 9]]]))


@pytest.mark.parametrize("measure", [pairwise_prototype_errors, prototype_confusion])
def test_given_plan_replaces_the_draw(measure):
    features, labels = _random_classes(seed=6)
    plan = draw_shots(labels, shots=3, trials=6, max_per_class=10, seed=2)
    drawn = measure(features, labels, 3, 6, max_per_class=10, seed=2, device="cpu")
    np.testing.assert_array_equal(measure(features, plan=plan, device="cpu"), drawn)
    # labels, shots and trials that agree with the plan may be given too
    agreeing = measure(features, labels, shots=3, trials=6, seed=0, device="cpu", plan=plan)
    np.testing.assert_array_equal(agreeing, drawn)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(shots=4), r"shots=4 was given with plan, but the plan has 3; leave shots out"),
        (dict(trials=7), r"trials=7 was given with plan, but the plan has 6"),
        (dict(seed=2), r"seed=2 was given with plan, but the plan fixes the draw"),
        (dict(seed=np.random.default_rng(0)), r"seed=Generator.* was given with plan"),
        (dict(max_per_class=10), r"max_per_class=10 was given with plan"),
        (dict(labels=np.zeros(67, dtype=int)), "labels disagree with plan"),
        (dict(labels=np.zeros(5, dtype=int)), "labels has 5 entries"),
        (dict(plan="shots"), "plan must be a ShotPlan"),
        (dict(features=np.zeros((20, 6))), "plan.rows index samples beyond the 20 rows"),
    ],
)
def test_given_plan_contradicted_is_refused_with_the_argument_named(kwargs, message):
    features, labels = _random_classes(sizes=(12, 15, 9, 20, 11))
    plan = draw_shots(labels, shots=3, trials=6, seed=2)
    args = dict(features=features, plan=plan) | kwargs
    for measure in (pairwise_prototype_errors, prototype_confusion):
        with pytest.raises(ValueError, match=message):
            measure(**args)


def test_labels_are_needed_without_a_plan():
    features, _ = _random_classes()
    with pytest.raises(ValueError, match="labels must be given unless plan is"):
        pairwise_prototype_errors(features, shots=2, trials=2)


def test_kernel_refuses_unknown_rule_and_distance():
    features, plan = _line_plan()
    x = torch.from_numpy(features)
    for kernel in (mean_weights, mean_weights_float64):
        with pytest.raises(ValueError, match="rule must be one of sign, nearest"):
            kernel(x, plan, "sqeuclidean", "cpu", "vote")
        with pytest.raises(ValueError, match="distance must be one of"):
            kernel(x, plan, "euclid", "cpu", "sign")
    with pytest.raises(ValueError, match="distance must be one of"):
        reference_pairwise_errors(features, plan, "euclid")


def test_mean_offdiagonal():
    m = np.array([[9.0, 1, 2], [3, 9, 4], [5, 6, 9]])
    assert mean_offdiagonal(m) == pytest.approx(21 / 6)
    with pytest.raises(ValueError, match="square"):
        mean_offdiagonal(np.ones((2, 3)))
