"""The active-learning loop (gptff_flows.flows.learn) with EMT labels of a 4-atom Cu3Au cell, in
temporary embedded stores: it lowers the held-out force error of the published network by at
least 2× within three iterations (the published network's error measured here by
GPTFFCalculator on the same held-out labels, the committee's recomputed from its stored
checkpoints); a second run and a run resumed after a kill compute no label twice; a failed label
is recorded and skipped; bad settings are refused before any work. The loop runs in float64."""

import hashlib

import numpy as np
import pytest

pytest.importorskip("atomate2")

from ase.build import bulk
from ase.calculators.emt import EMT
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

import gptff_core.training.committee as committee_module
import gptff_flows.jobs.labels as labels_module
from gptff_core.calculator import GPTFFCalculator
from gptff_core.errors import ComputationError, GPTFFInputError
from gptff_flows import queries
from gptff_flows.flows.learn import ActiveLearningMaker
from gptff_flows.jobs.learn import UNTRAINED, should_stop
from gptff_flows.run import run_flow
from gptff_flows.schemas.learn import LearningDocument, LearningIterationDocument
from gptff_flows.stores import local_job_store

LOOP = dict(
    temperatures=[600.0, 900.0],
    md_steps=40,
    sample_interval=4,
    iterations=3,
    frames_per_iteration=6,
    committee_size=2,
    holdout_fraction=0.34,
    threshold=0.005,
    min_distance=0.05,
    recipe={"epochs": 4, "learning_rate": 1e-3, "max_structures_per_batch": 1},
    dtype="float64",
)
"""The loop of the 2× test: 20 frames sampled per iteration, 6 labelled (2 held out), a
committee of 2 fine-tuned for 4 epochs (one frame per step)."""

SMALL = dict(
    LOOP,
    temperatures=[700.0],
    md_steps=16,
    sample_interval=2,
    iterations=2,
    frames_per_iteration=4,
    min_distance=0.02,
    recipe={"epochs": 1, "learning_rate": 1e-3, "max_structures_per_batch": 1},
)
"""A cheaper loop for the bookkeeping tests: 8 frames sampled, 4 labelled (1 held out)."""


@pytest.fixture(scope="module")
def cu3au():
    atoms = bulk("Cu", "fcc", a=3.70, cubic=True)
    atoms.set_chemical_symbols(["Au", "Cu", "Cu", "Cu"])
    return AseAtomsAdaptor.get_structure(atoms)


def count_labels(monkeypatch, computed: list) -> None:
    """Record the frame key of every label computed (label_job calls label_structure)."""
    real = labels_module.label_structure

    def counting(structure, labeller, settings=None, **kwargs):
        document = real(structure, labeller, settings, **kwargs)
        computed.append(document.frame_key)
        return document

    monkeypatch.setattr(labels_module, "label_structure", counting)


def learning_documents(store) -> list[LearningDocument]:
    store.connect()
    docs = store.query({"output.@class": "LearningDocument"}, load=True)
    found = sorted(docs, key=lambda d: d["completed_at"])
    return [LearningDocument.model_validate(d["output"]) for d in found]


def held_out(store, doc: LearningDocument, iteration: int) -> list[dict]:
    """The converged held-out label documents selected up to ``iteration``."""
    return [
        store.get_output(r.uuid, load=True)
        for r in doc.labels
        if r.holdout and r.converged and r.iteration <= iteration
    ]


def force_mae(calculators, labels: list[dict]) -> float:
    """eV/Å: mean |F − F_label| over components, F the mean of ``calculators``' forces."""
    errors = []
    for label in labels:
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(label["structure"]))
        forces = []
        for calculator in calculators:
            atoms.calc = calculator
            forces.append(atoms.get_forces())
        errors.append(np.abs(np.mean(forces, axis=0) - np.array(label["forces"])).ravel())
    return float(np.concatenate(errors).mean())


@pytest.fixture(scope="module")
def emt_run(tmp_path_factory, cu3au):
    """One loop of LOOP into a fresh store: (store, LearningDocument, keys of labels computed)."""
    store = local_job_store(tmp_path_factory.mktemp("learn") / "store")
    computed = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        count_labels(monkeypatch, computed)
        run_flow(ActiveLearningMaker(**LOOP).make(cu3au), store)
    (doc,) = learning_documents(store)
    return store, doc, computed


def test_loop_with_emt_labels_halves_the_published_force_error(emt_run, tmp_path):
    store, doc, computed = emt_run
    assert doc.stop_reason == "iterations" and [row.iteration for row in doc.iterations] == [
        0,
        1,
        2,
    ]
    assert len(computed) == len(set(computed)) == doc.n_labels + doc.n_failed_labels
    assert sorted(computed) == sorted(r.frame_key for r in doc.labels)
    assert doc.n_failed_labels == 0 and doc.committee_iteration == 2
    # the labels are EMT's: energy and forces of the stored structure, computed here
    labels = held_out(store, doc, 2)
    for label in labels:
        atoms = AseAtomsAdaptor.get_atoms(Structure.from_dict(label["structure"]))
        atoms.calc = EMT()
        assert label["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(label["forces"], atoms.get_forces(), atol=1e-10)
    # the final committee's held-out error, recomputed from its stored checkpoints
    paths = doc.write_committee(tmp_path / "committee")
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths] == doc.committee_sha256
    members = [GPTFFCalculator(model=str(p), dtype="float64", smooth=True) for p in paths]
    assert doc.final_force_mae == pytest.approx(force_mae(members, labels), rel=1e-8)
    assert doc.iterations[-1].held_out.n_frames == len(labels)
    # the published network on the same held-out labels, iteration by iteration
    published = GPTFFCalculator(model="gptff-v2", dtype="float64")
    print("\niteration labels held-out | force MAE eV/Å: published committee | energy MAE "
          "meV/atom | held-out σ mean, max eV/Å | sampled σ mean eV/Å")  # fmt: skip
    for row in doc.iterations:
        reference = force_mae([published], held_out(store, doc, row.iteration))
        held = row.held_out
        print(f"{row.iteration} {row.n_labels} {held.n_frames} | {reference:.4f} "
              f"{held.force_mae:.4f} | {held.energy_mae:.2f} | {held.mean_uncertainty:.4f} "
              f"{held.max_uncertainty:.4f} | {row.sampled_mean_uncertainty}")  # fmt: skip
    assert doc.final_force_mae <= force_mae([published], labels) / 2
    # iterations ≥ 1 were sampled by the previous committee, which disagrees somewhere
    assert doc.iterations[0].sampled_mean_uncertainty is None
    assert all(row.sampled_mean_uncertainty > 0 for row in doc.iterations[1:])


def test_stored_documents_and_queries(emt_run):
    store, doc, _ = emt_run
    store.connect()
    iterations = list(store.query({"output.@class": "LearningIterationDocument"}, load=False))
    assert len(iterations) == 3
    for row in doc.iterations:  # each iteration job's output is its document
        output = store.get_output(row.uuid, load=True)
        assert isinstance(output, LearningIterationDocument)
        assert output.iteration == row.iteration
        assert output.committee_sha256 == row.committee_sha256
    assert all("blob_uuid" in d["output"]["committee"] for d in iterations)  # in the data store
    (record,) = queries.learn_results(store, formula="AuCu3")
    assert record["n_iterations"] == 3 and record["n_labels"] == doc.n_labels
    assert record["labeller"] == "emt" and record["stop_reason"] == "iterations"
    assert record["final_model_sha256"] == ",".join(doc.committee_sha256)
    maes = [float(v) for v in record["force_mae"].split(",")]
    assert maes == pytest.approx([row.held_out.force_mae for row in doc.iterations], rel=1e-3)
    assert record["flow_name"] == "GPTFF active learning"
    rows = queries.learn_iterations(store, flow_name="active learning")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert [r["n_labels"] for r in rows] == [row.n_labels for row in doc.iterations]
    # each committee is fine-tuned on every training label so far
    assert [r["n_train"] + r["n_holdout"] for r in rows] == [r["n_labels"] for r in rows]
    assert rows[0]["n_train"] < rows[1]["n_train"] < rows[2]["n_train"]
    assert rows[0]["sampled_mean_uncertainty"] is None and rows[2]["n_selected"] == 6


def test_running_again_computes_no_label_and_trains_no_committee(emt_run, cu3au, monkeypatch):
    """A second run into the same store (a new flow, every job runs) samples the same frames
    (seeded MD, the same committees) and finds every label and committee stored."""
    store, first, _ = emt_run
    computed, trained = [], []
    count_labels(monkeypatch, computed)
    real = committee_module.train_committee
    monkeypatch.setattr(committee_module, "train_committee",
                        lambda *a, **k: trained.append(1) or real(*a, **k))  # fmt: skip
    run_flow(ActiveLearningMaker(**LOOP).make(cu3au), store)
    assert computed == [] and trained == []
    second = learning_documents(store)[-1]
    assert [r.frame_key for r in second.labels] == [r.frame_key for r in first.labels]
    assert all(r.reused for r in second.labels)
    assert second.committee_sha256 == first.committee_sha256
    assert second.final_force_mae == pytest.approx(first.final_force_mae, rel=1e-10)


def test_resume_after_a_kill_relabels_nothing(tmp_path, cu3au, monkeypatch):
    """The run dies while training iteration 1's committee (after its labels were stored);
    run_flow(resume=True) finishes it without computing any label again."""
    store = local_job_store(tmp_path / "store")
    computed = []
    count_labels(monkeypatch, computed)
    real = committee_module.train_committee
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ComputationError("killed while training (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(committee_module, "train_committee", dying)
    with pytest.raises(ComputationError, match="killed while training"):
        run_flow(ActiveLearningMaker(**SMALL).make(cu3au), store)
    assert learning_documents(store) == []
    before = list(computed)
    # both iterations labelled (iteration 0 selects at most frames_per_iteration)
    assert len(before) == len(set(before)) > SMALL["frames_per_iteration"]

    monkeypatch.setattr(committee_module, "train_committee", real)
    run_flow(ActiveLearningMaker(**SMALL).make(cu3au), store, resume=True)
    assert computed == before  # nothing labelled again
    (doc,) = learning_documents(store)
    assert sorted(r.frame_key for r in doc.labels) == sorted(before)
    assert doc.n_labels == len(before)
    # iteration 0 finished before the kill and was reused whole; iteration 1 sampled the same
    # frames again (same committee, same seeds) and found their labels
    assert all(r.reused == (r.iteration == 1) for r in doc.labels)
    assert [r["iteration"] for r in queries.learn_iterations(store)] == [0, 1]


def test_a_failed_label_is_recorded_and_skipped(tmp_path, cu3au, monkeypatch):
    """One label 'does not converge' (the calculator raises inside label_structure, which
    records it): stored with converged=False, left out of training, named in the document.
    Then a label job that dies without a document: the loop still finishes and says so."""
    real = labels_module._compute
    calls = []

    def failing_second(atoms, labeller, settings, log):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("SCF not converged (test)")
        return real(atoms, labeller, settings, log)

    monkeypatch.setattr(labels_module, "_compute", failing_second)
    store = local_job_store(tmp_path / "store")
    run_flow(ActiveLearningMaker(**dict(SMALL, iterations=1)).make(cu3au), store)
    (doc,) = learning_documents(store)
    (failed,) = doc.failed_labels
    assert "SCF not converged (test)" in failed.error and not failed.converged
    assert doc.n_labels == SMALL["frames_per_iteration"] - 1 and "labels_failed" in doc.flags
    stored = store.query_one({"output.frame_key": failed.frame_key}, load=True)["output"]
    assert stored["converged"] is False and stored["forces"] is None
    (iteration,) = queries.learn_iterations(store)
    assert iteration["n_train"] + iteration["n_holdout"] == SMALL["frames_per_iteration"] - 1

    calls.clear()
    real_label = labels_module.label_structure

    def dying_first(structure, labeller, settings=None, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("the label job died (test)")
        return real_label(structure, labeller, settings, **kwargs)

    monkeypatch.setattr(labels_module, "label_structure", dying_first)
    other = local_job_store(tmp_path / "other")
    maker = ActiveLearningMaker(**dict(SMALL, iterations=1, seed=1))
    with pytest.raises(ComputationError, match="the label job died"):
        run_flow(maker.make(cu3au), other)
    (doc,) = learning_documents(other)
    (failed,) = doc.failed_labels
    assert "left no label" in failed.error and failed.uuid is not None


def test_the_loop_stops_when_the_committee_agrees_on_its_own_md(tmp_path, cu3au):
    """A threshold above the sampled uncertainty: iteration 1 samples with iteration 0's
    committee and stops; iteration 2 does nothing; the final committee is iteration 0's."""
    store = local_job_store(tmp_path / "store")
    recipe = dict(SMALL["recipe"], epochs=3)  # trained: a member improves on the refit
    maker = ActiveLearningMaker(**dict(SMALL, iterations=3, threshold=10.0, recipe=recipe))
    run_flow(maker.make(cu3au), store)
    (doc,) = learning_documents(store)
    assert UNTRAINED not in doc.iterations[0].flags
    assert doc.stop_reason == "threshold" and doc.threshold_reached
    assert 0 < doc.final_sampling.mean_uncertainty < 10.0
    assert doc.final_sampling.sampler == "committee of iteration 0"
    assert doc.committee_iteration == 0 and [row.iteration for row in doc.iterations] == [0]
    assert doc.committee_sha256 == doc.iterations[0].committee_sha256
    assert len(queries.learn_iterations(store)) == 1  # one committee trained
    (record,) = queries.learn_results(store)
    assert record["final_sampled_uncertainty"] == pytest.approx(doc.final_sampling.mean_uncertainty)


def test_sampling_md_is_seeded_and_npt_moves_the_cell(cu3au):
    """The sampling MD (here with EMT as the model, to be quick) gives the same frames for the
    same seeds and other frames for another; NPT changes the cell; frames every interval."""
    from gptff_flows.jobs.learn_sampling import md_cell, md_rng, run_md

    options = dict(time_step=2.0, md_steps=20, sample_interval=5, ensemble="nvt", pressure=0.0)
    atoms = md_cell(cu3au, [2, 1, 1])
    first, failure = run_md(atoms, EMT(), 800.0, options, md_rng(0, 1, 0, 0))
    again, _ = run_md(atoms, EMT(), 800.0, options, md_rng(0, 1, 0, 0))
    other, _ = run_md(atoms, EMT(), 800.0, options, md_rng(0, 2, 0, 0))
    assert failure is None and [step for step, _, _ in first] == [5, 10, 15, 20]
    assert all(np.array_equal(a.positions, b.positions) for (_, a, _), (_, b, _) in
               zip(first, again, strict=True))  # fmt: skip
    assert not np.allclose(first[-1][1].positions, other[-1][1].positions)
    assert first[0][2] is None  # EMT has no uncertainty
    npt, _ = run_md(atoms, EMT(), 800.0, dict(options, ensemble="npt", pressure=1.0),
                    md_rng(0, 1, 0, 0))  # fmt: skip
    assert not np.allclose(npt[-1][1].cell.array, atoms.cell.array)
    np.testing.assert_allclose(first[-1][1].cell.array, atoms.cell.array)


def test_a_frame_selected_twice_is_labelled_once(cu3au):
    """With min_distance 0 two identical frames can both be selected: one label job, one
    record (outside a job there is no store to look labels up in)."""
    from gptff_flows.jobs.learn_labels import label_jobs, selected_frame
    from gptff_flows.jobs.learn_sampling import Candidate, md_cell

    atoms = md_cell(cu3au, [1, 1, 1])
    candidates = [Candidate(atoms.copy(), 0, 600.0, step, None) for step in (5, 10)]
    options = ActiveLearningMaker(**SMALL).settings()
    selected = [selected_frame(c, 0.0, False, options) for c in candidates]
    jobs, records, documents = label_jobs(selected, candidates, [0, 1], options, 0)
    assert len(jobs) == len(records) == len(documents) == 1
    assert records[0]["frame_key"] == selected[0].frame_key == selected[1].frame_key


def test_stopping_rule():
    """Below the threshold stops from iteration 1 on, unless the committee that sampled was
    never trained (every member kept the reference refit: members identical, disagreement 0)."""
    trained, untrained = {"flags": []}, {"flags": [UNTRAINED]}
    assert should_stop(1, trained, 0.01, 0.05) and should_stop(3, trained, 0.049, 0.05)
    assert not should_stop(1, trained, 0.05, 0.05) and not should_stop(1, trained, 0.2, 0.05)
    assert not should_stop(0, None, None, 0.05) and not should_stop(1, trained, None, 0.05)
    assert not should_stop(2, untrained, 0.0, 0.05)


def test_bad_settings_are_refused_before_any_work(cu3au):
    cases = [
        (dict(ensemble="nve"), "ensemble"),
        (dict(temperatures=[]), "temperatures"),
        (dict(temperatures=[-5.0]), "temperatures"),
        (dict(time_step=20.0), "time_step"),
        (dict(md_steps=10, sample_interval=20), "sample_interval"),
        (dict(frames_per_iteration=50), "fewer than frames_per_iteration=50"),
        (dict(committee_size=1), "committee_size"),
        (dict(threshold=0.0), "threshold"),
        (dict(holdout_fraction=1.0), "holdout_fraction"),
        (dict(frames_per_iteration=1), "frames_per_iteration must be ≥ 2"),
        (dict(min_distance=-0.1), "min_distance"),
        (dict(recipe={"epochs": 0}), "epochs"),
        (dict(recipe={"epochz": 3}), "recipe"),
        (dict(labeller="cp2k"), "labeller"),
        (dict(supercell=[1, 1]), "supercell"),
        (dict(calculator_kwargs={"skin": 0.5}), "skin"),
        (dict(dtype="float16"), "dtype"),
    ]
    for fields, message in cases:
        with pytest.raises(GPTFFInputError, match=message):
            ActiveLearningMaker(**{**SMALL, **fields}).make(cu3au)
    with pytest.raises(GPTFFInputError, match="no structure"):
        ActiveLearningMaker(**SMALL).make([])
    # a valid loop: a job per iteration (each adds its labels and training at run time), then
    # the summary
    flow = ActiveLearningMaker(**SMALL).make(AseAtomsAdaptor.get_atoms(cu3au))
    names = ["GPTFF active learning iteration 0", "GPTFF active learning iteration 1"]
    assert [job.name for job in flow.jobs] == [*names, "GPTFF active learning summary"]
    assert flow.jobs[0].function_args[2]["smooth"] is True
