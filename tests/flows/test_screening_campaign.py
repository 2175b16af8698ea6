"""gptff_flows.flows.screening: a small substitution campaign end to end into a temporary store
(with broken candidates), kill and resume, and the CLI (`gptff screen`, `gptff results screen`).

Tiny 2-atom prototypes, loose fmax and small chunks keep these tests to seconds each."""

import json

import numpy as np
import pytest

pytest.importorskip("atomate2")
pytest.importorskip("torch_sim")

from ase import Atoms
from ase.build import bulk
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError
from gptff_flows import queries
from gptff_flows.flows.screening import SubstitutionScreeningMaker
from gptff_flows.jobs import screening as screening_jobs
from gptff_flows.run import run_flow
from gptff_flows.stores import local_job_store

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::UserWarning", "ignore::DeprecationWarning"
)

FAST = dict(fmax=0.1, steps=60, min_atoms=16, dtype="float64")


def structure(*args, **kwargs):
    return AseAtomsAdaptor.get_structure(bulk(*args, **kwargs))


def overlapping():
    """Two atoms 0.3 Å apart in a cubic box: GPTFF refuses it."""
    atoms = Atoms("MgSe", positions=[[0, 0, 0], [0.3, 0, 0]], cell=[3.0] * 3, pbc=True)
    return AseAtomsAdaptor.get_structure(atoms)


def chunk_candidates(store) -> list[dict]:
    store.connect()
    docs = store.query({"output.@class": "ScreeningChunkDocument"}, properties=["output"])
    return [c for d in docs for c in d["output"]["candidates"]]


def latest_campaign(store) -> dict:
    docs = sorted(
        store.query({"output.@class": "ScreeningCampaignDocument"}, load=True),
        key=lambda d: d["completed_at"],
    )
    return docs[-1]["output"]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """22 good candidates and 2 broken ones (an element beyond Pu, overlapping atoms)."""
    store = local_job_store(tmp_path_factory.mktemp("store"))
    prototypes = {
        "rocksalt": structure("NaCl", "rocksalt", a=5.64),
        "b2": structure("CsCl", "cesiumchloride", a=4.12),
        "exotic": structure("KI", "rocksalt", a=7.0),  # I -> Am: Z = 95, unknown to GPTFF
        "overlap": overlapping(),  # Se -> Te: still overlapping
    }
    substitutions = {
        "Na": ["K", "Li", "Rb", "Ag"],
        "Cs": ["Rb", "K"],
        "Cl": ["Br", "F"],
        "I": ["Am"],
        "Se": ["Te"],
    }
    competing = {
        "KCl": structure("KCl", "rocksalt", a=6.29),
        "LiF": PDEntry(Composition("LiF"), -9.5),  # a computed entry, used as given
    }
    maker = SubstitutionScreeningMaker(name="test campaign", chunk_size=8, **FAST)
    flow = maker.make(prototypes, substitutions, competing)
    run_flow(flow, store)
    return store


def test_good_candidates_stored_broken_ones_failed_with_errors(campaign):
    documents = [c for c in chunk_candidates(campaign) if c["role"] == "candidate"]
    assert len(documents) == 24
    by_label = {d["label"]: d for d in documents}
    assert len(by_label) == 24, "a candidate was stored twice"
    broken = {"exotic:I->Am", "overlap:Se->Te"}
    for label in broken:
        assert by_label[label]["status"] == "failed"
        assert by_label[label]["relaxed_structure"] is None
    assert "outside the elements GPTFF knows" in by_label["exotic:I->Am"]["error"]
    assert "overlapping atoms" in by_label["overlap:Se->Te"]["error"]
    good = [d for label, d in by_label.items() if label not in broken]
    for d in good:
        assert d["status"] in ("relaxed", "not_converged"), d["error"]
        assert d["error"] is None and np.isfinite(d["energy_per_atom"])
        assert d["supercell_atoms"] >= FAST["min_atoms"]
        assert d["cell_policy"] == {"name": "supercell", "min_atoms": FAST["min_atoms"]}
        assert d["gptff"]["checkpoint_sha256"] == d["settings"]["checkpoint_sha256"]
        assert d["relaxed_structure"] is not None and d["n_steps"] is not None
    summary = latest_campaign(campaign)
    assert summary["counts"]["failed"] == 2
    assert summary["counts"]["relaxed"] + summary["counts"]["not_converged"] == 22


def test_ranking_matches_an_independent_phase_diagram(campaign):
    documents = chunk_candidates(campaign)

    def entry(d):
        composition = Composition(d["formula_pretty"])
        return PDEntry(composition, d["energy_per_atom"] * composition.num_atoms)

    phases = [entry(d) for d in documents if d["role"] != "candidate" and d["status"] != "failed"]
    phases.append(PDEntry(Composition("LiF"), -9.5))
    ranking = latest_campaign(campaign)["ranking"]
    ranked = {r["key"]: r for r in ranking}
    checked = 0
    for d in documents:
        if d["role"] != "candidate" or d["status"] == "failed":
            continue
        elements = set(Composition(d["formula_pretty"]).elements)
        diagram = PhaseDiagram([p for p in phases if set(p.composition.elements) <= elements])
        e_hull = diagram.get_e_above_hull(entry(d), allow_negative=True)
        e_form = diagram.get_form_energy_per_atom(entry(d))
        assert ranked[d["key"]]["e_above_hull"] == pytest.approx(e_hull, abs=1e-8)
        assert ranked[d["key"]]["e_form_per_atom"] == pytest.approx(e_form, abs=1e-8)
        checked += 1
    assert checked == 22
    hulls = [r["e_above_hull"] for r in ranking if r["e_above_hull"] is not None]
    assert hulls == sorted(hulls) and len(hulls) == 22
    assert [r["status"] for r in ranking[-2:]] == ["failed", "failed"]
    # KCl is also a competing phase: the candidate lies on (or just off) the hull
    kcl = next(r for r in ranking if r["formula"] == "KCl" and r["prototype_id"] == "rocksalt")
    assert abs(kcl["e_above_hull"]) < 0.01


def test_query_filters(campaign):
    everything = queries.screening_results(campaign, campaign="test campaign")
    assert len(everything) == 24
    stable = queries.screening_results(campaign, max_ehull=0.0)
    assert stable and all(r["e_above_hull"] <= 0.0 for r in stable)
    kcl = queries.screening_results(campaign, chemsys="K-Cl")
    assert {r["formula"] for r in kcl} == {"KCl"}
    assert queries.screening_campaigns(campaign)[0]["candidates"] == 24


def test_kill_and_resume(tmp_path, monkeypatch):
    store = local_job_store(tmp_path / "store")
    prototypes = {"rocksalt": structure("NaCl", "rocksalt", a=5.64)}
    substitutions = {"Na": ["K", "Li"], "Cl": ["Br"]}  # 5 candidates + 5 references
    maker = SubstitutionScreeningMaker(name="resume", chunk_size=3, **FAST)
    relaxed_keys: list[str] = []
    original = screening_jobs.relax_items

    def crash_on_second_chunk(items, *args, **kwargs):
        if len(relaxed_keys) >= 3:
            raise RuntimeError("simulated crash")
        relaxed_keys.extend(i["key"] for i in items)
        return original(items, *args, **kwargs)

    monkeypatch.setattr(screening_jobs, "relax_items", crash_on_second_chunk)
    with pytest.raises(RuntimeError):
        run_flow(maker.make(prototypes, substitutions), store)
    first = {c["key"] for c in chunk_candidates(store)}
    assert first == set(relaxed_keys) and len(first) == 3

    def counting(items, *args, **kwargs):
        relaxed_keys.extend(i["key"] for i in items)
        return original(items, *args, **kwargs)

    relaxed_keys.clear()
    monkeypatch.setattr(screening_jobs, "relax_items", counting)
    run_flow(maker.make(prototypes, substitutions), store)
    assert len(relaxed_keys) == 7 and not set(relaxed_keys) & first  # only the missing ones
    keys = [c["key"] for c in chunk_candidates(store)]
    assert len(keys) == len(set(keys)) == 10  # nothing duplicated, nothing lost
    summary = latest_campaign(store)
    assert summary["counts"]["candidates"] == 5
    first_candidates = {r["key"] for r in summary["ranking"]} & first
    assert {r["key"] for r in summary["ranking"] if r["stored_before"]} == first_candidates
    # a third run computes nothing
    relaxed_keys.clear()
    run_flow(maker.make(prototypes, substitutions), store)
    assert relaxed_keys == [] and latest_campaign(store)["counts"]["stored_before"] == 5


def test_maker_validates_its_fields():
    prototypes = {"rocksalt": structure("NaCl", "rocksalt", a=5.64)}
    for field, value in [("fmax", 0), ("chunk_size", 0), ("min_atoms", -1), ("dtype", "f16")]:
        with pytest.raises(GPTFFInputError, match=field):
            SubstitutionScreeningMaker(**{field: value}).make(prototypes, {"Na": ["K"]})
    with pytest.raises(GPTFFInputError, match="not an element"):
        SubstitutionScreeningMaker().make(prototypes, {"Na": ["Xx"]})


def test_maker_takes_the_shared_options_and_refuses_calculator_kwargs():
    """The Maker's model/dtype/smooth/device come from GPTFFOptions (checked there); the
    TorchSim batches take no calculator options, so calculator_kwargs is refused, named."""
    from gptff_flows.options import GPTFFOptions

    prototypes = {"rocksalt": structure("NaCl", "rocksalt", a=5.64)}
    assert isinstance(SubstitutionScreeningMaker(), GPTFFOptions)
    for field, value in [("smooth", "yes"), ("device", ""), ("calculator_kwargs", {"skin": 1})]:
        with pytest.raises(GPTFFInputError, match=field):
            SubstitutionScreeningMaker(**{field: value}).make(prototypes, {"Na": ["K"]})


def test_cli_screen_then_results(tmp_path, capsys):
    from gptff_core.cli import main

    structure("NaCl", "rocksalt", a=5.64).to(filename=str(tmp_path / "NaCl.cif"))
    store = str(tmp_path / "store")
    common = ["--store", store, "--fmax", "0.1", "--min-atoms", "16", "--chunk-size", "4"]
    argv = ["screen", str(tmp_path / "NaCl.cif"), "--substitute", "Na=K,Li", *common]
    assert main([*argv, "--json", "--campaign", "cli"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["formula"] for r in rows} == {"KCl", "LiCl"}
    assert all({"formula", "e_form_per_atom", "e_above_hull", "status"} <= set(r) for r in rows)
    assert main(["results", "screen", "--store", store, "--campaign", "cli", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [r["formula"] for r in found] == [r["formula"] for r in rows]
    assert main(["results", "screen", "--store", store, "--chemsys", "Li-Cl"]) == 0
    text = capsys.readouterr().out
    assert "LiCl" in text and "KCl" not in text
    assert main([*argv, "--campaign", "cli"]) == 0  # rerun: everything from the store
    assert "2 taken from the store" in capsys.readouterr().out


def test_a_structure_breaking_mid_batch_fails_alone(monkeypatch):
    """When the batch stops (a structure collapsing at some step), the chunk is relaxed one by
    one and only the culprit is stored as failed."""
    import gptff_core.relax
    import gptff_core.torchsim
    from gptff_core.errors import StructureError
    from gptff_flows.jobs.screening import checkpoint_sha256
    from gptff_flows.schemas.screening import ScreeningSettings

    def broken_batch(*args, **kwargs):
        raise StructureError("system 1: atoms closer than 0.5 Å")

    original = gptff_core.relax.relax

    def relax(atoms, *args, **kwargs):
        if atoms.get_chemical_formula() == "ClK":
            raise StructureError("atom 0 (K) and atom 1 (Cl) are 0.4 Å apart")
        return original(atoms, *args, **kwargs)

    monkeypatch.setattr(gptff_core.torchsim, "relax_batch", broken_batch)
    monkeypatch.setattr(gptff_core.relax, "relax", relax)
    settings = ScreeningSettings(
        model="gptff-v2", checkpoint_sha256=checkpoint_sha256("gptff-v2"), smooth=None,
        **FAST | {"steps": 20},
    )  # fmt: skip
    items = [
        dict(key=f"k{i}", label=formula, structure=structure(formula, "rocksalt", a=a))
        for i, (formula, a) in enumerate([("NaCl", 5.64), ("KCl", 6.29), ("LiCl", 5.13)])
    ]
    documents = screening_jobs.relax_items(items, settings, "test")
    assert [d.status for d in documents].count("failed") == 1
    failed = next(d for d in documents if d.status == "failed")
    assert failed.label == "KCl" and "0.4 Å apart" in failed.error
    assert all(d.relaxed_one_by_one for d in documents)
    assert all(d.energy_per_atom is not None for d in documents if d.status != "failed")


def test_candidate_documents_by_key(campaign):
    from gptff_flows.queries import candidate_documents

    best = queries.screening_results(campaign, campaign="test campaign")[:3]
    documents = candidate_documents(campaign, [r["key"] for r in best])
    assert [d.formula_pretty for d in documents] == [r["formula"] for r in best]
    assert all(d.relaxed_structure is not None for d in documents)


# ---------------------------------------------------------------- verdicts and refusals


def test_hull_says_when_it_holds_only_elemental_references(campaign):
    """The campaign has KCl (structure) and LiF (entry) as competing phases: candidates in K-Cl
    and Li-F are ranked against them, every other system against its elements only, so there
    E above hull equals the formation energy and the candidate says so."""
    ranking = latest_campaign(campaign)["ranking"]
    ranked = [r for r in ranking if r["e_above_hull"] is not None]
    assert len(ranked) == 22
    for r in ranked:
        with_phases = r["chemsys"] in ("Cl-K", "F-Li")
        if with_phases:
            assert r["hull_references"] == "elements and competing phases"
            assert "no_competing_phases" not in r["flags"]
        else:
            assert r["hull_references"] == "elements only"
            assert "no_competing_phases" in r["flags"]
            assert r["e_above_hull"] == pytest.approx(r["e_form_per_atom"], abs=1e-9)
        assert ("not_converged" in r["flags"]) == (r["status"] == "not_converged")
    rows = queries.screening_results(campaign, campaign="test campaign")
    assert {r["key"]: r["flags"] for r in rows} == {r["key"]: r["flags"] for r in ranking}


def test_cli_notes_a_hull_of_elements_only_and_flags_in_json(tmp_path, capsys):
    from gptff_core.cli import main

    structure("NaCl", "rocksalt", a=5.64).to(filename=str(tmp_path / "NaCl.cif"))
    store = str(tmp_path / "store")
    argv = ["screen", str(tmp_path / "NaCl.cif"), "--substitute", "Na=K", "--store", store]
    argv += ["--fmax", "0.1", "--min-atoms", "16", "--campaign", "salt", "--no-plot"]
    assert main([*argv, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["hull_references"] == "elements only" and row["flags"] == ["no_competing_phases"]
    assert row["e_above_hull"] == pytest.approx(row["e_form_per_atom"], abs=1e-9)
    assert main(argv) == 0
    note = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "no competing phases in Cl-K" in note[0]
    assert main(["results", "screen", "--store", store, "--campaign", "salt"]) == 0
    assert "note: no competing phases in Cl-K" in capsys.readouterr().out
    assert main(["results", "screen", "--store", store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["flags"] == ["no_competing_phases"]


def test_cli_refuses_a_substitution_matching_no_prototype_before_any_work(tmp_path, capsys):
    from gptff_core.cli import main
    from gptff_core.errors import ExitCode

    structure("NaCl", "rocksalt", a=5.64).to(filename=str(tmp_path / "NaCl.cif"))
    store = tmp_path / "store"
    argv = ["screen", str(tmp_path / "NaCl.cif"), "--substitute", "Fe=Co", "--store", str(store)]
    assert main(argv) == ExitCode.BAD_INPUT
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        "gptff: error: substitution Fe=Co: no prototype contains Fe (their elements: Cl, Na); "
        "remove it or add a prototype with Fe"
    ]
    assert not store.exists()  # refused before the store was even opened


def test_cli_campaign_left_without_candidates_fails_saying_why(tmp_path, capsys, monkeypatch):
    """Cl -> O on NaCl is not charge balanced: no candidate is left, nothing is relaxed, the
    campaign document records why, and the command exits FAILED with that reason."""
    from gptff_core.cli import main
    from gptff_core.errors import ExitCode

    relaxed: list = []
    monkeypatch.setattr(screening_jobs, "relax_items", lambda items, *a, **k: relaxed.extend(items))
    structure("NaCl", "rocksalt", a=5.64).to(filename=str(tmp_path / "NaCl.cif"))
    store = str(tmp_path / "store")
    argv = ["screen", str(tmp_path / "NaCl.cif"), "--substitute", "Cl=O", "--charge-balanced"]
    argv += ["--replace-all", "--store", store, "--campaign", "oxide", "--no-plot", "--json"]
    assert main(argv) == ExitCode.FAILED
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert captured.err.strip().splitlines() == [
        "gptff: error: campaign oxide: no candidates: not charge balanced: NaCl:Cl->O"
    ]
    assert relaxed == []
    (summary,) = queries.screening_campaigns(local_job_store(store), campaign="oxide")
    assert summary["status"] == "no_candidates" and summary["candidates"] == 0
    assert "not charge balanced: NaCl:Cl->O" in summary["message"]


def test_cli_without_logging_configured_prints_the_reason_once(tmp_path, capsys):
    """A plain `gptff` run configures no logging: the campaign's own warnings (no candidates,
    none ranked), which the command reports itself, must not reach stderr a second time."""
    import logging

    from gptff_core.cli import main
    from gptff_core.errors import ExitCode

    structure("NaCl", "rocksalt", a=5.64).to(filename=str(tmp_path / "NaCl.cif"))
    argv = ["screen", str(tmp_path / "NaCl.cif"), "--substitute", "Cl=O", "--charge-balanced"]
    argv += ["--replace-all", "--store", str(tmp_path / "store"), "--campaign", "oxide"]
    root = logging.getLogger()
    handlers = root.handlers[:]
    root.handlers.clear()  # as outside pytest: warnings would go to logging.lastResort
    try:
        assert main([*argv, "--no-plot", "--json"]) == ExitCode.FAILED
    finally:
        root.handlers[:] = handlers
    assert capsys.readouterr().err.strip().splitlines() == [
        "gptff: error: campaign oxide: no candidates: not charge balanced: NaCl:Cl->O"
    ]


def test_cli_exit_code_flags_failed_candidates(tmp_path, capsys):
    """A campaign with a failed candidate (I -> Am, beyond the model's elements) is ranked but
    exits FLAGGED (0 before), saying how many failed."""
    from gptff_core.cli import main
    from gptff_core.errors import ExitCode

    structure("KI", "rocksalt", a=7.0).to(filename=str(tmp_path / "KI.cif"))
    argv = ["screen", str(tmp_path / "KI.cif"), "--substitute", "I=Am,Br", "--no-plot"]
    argv += ["--store", str(tmp_path / "store"), "--fmax", "0.1", "--min-atoms", "16"]
    assert main([*argv, "--campaign", "am"]) == ExitCode.FLAGGED
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        "gptff: campaign am: 1 candidate(s) failed, 1 reference/competing phase(s) failed; "
        "see status, error and flags"
    )  # the Am elemental reference fails too
    assert "KBr" in captured.out


def test_cli_campaign_whose_candidates_all_failed_fails(tmp_path, capsys):
    """I -> Am only: the one candidate fails, nothing is ranked: FAILED (0 before), with why."""
    from gptff_core.cli import main
    from gptff_core.errors import ExitCode

    structure("KI", "rocksalt", a=7.0).to(filename=str(tmp_path / "KI.cif"))
    argv = ["screen", str(tmp_path / "KI.cif"), "--substitute", "I=Am", "--no-plot"]
    argv += ["--store", str(tmp_path / "store"), "--fmax", "0.1", "--min-atoms", "16"]
    assert main([*argv, "--campaign", "am"]) == ExitCode.FAILED
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("gptff: error: campaign am: none of the 1 candidates got energetics: ")
    assert "outside the elements GPTFF knows" in last
    (summary,) = queries.screening_campaigns(local_job_store(tmp_path / "store"))
    assert summary["status"] == "no_results"


def test_maker_refuses_broken_prototypes_and_competing_phases_before_the_flow():
    from pymatgen.core import Lattice, Structure

    from gptff_core.errors import StructureError

    good = structure("NaCl", "rocksalt", a=5.64)
    nan = good.copy()
    nan.replace(1, "Cl", coords=[0.5, np.nan, 0.5])
    disordered = Structure(
        Lattice.cubic(5.64), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    maker = SubstitutionScreeningMaker()
    with pytest.raises(StructureError, match="prototype 'nan': positions contain NaN"):
        maker.make({"good": good, "nan": nan}, {"Na": ["K"]})
    with pytest.raises(StructureError, match=r"prototype 'mixed': .*partial occupancy"):
        maker.make({"mixed": disordered}, {"Na": ["K"]})
    with pytest.raises(StructureError, match="competing phase 'KCl': positions contain NaN"):
        maker.make({"good": good}, {"Na": ["K"]}, competing={"KCl": nan})
    with pytest.raises(GPTFFInputError, match="competing phase 'LiCl': energy nan"):
        maker.make({"good": good}, {"Na": ["K"]}, [PDEntry(Composition("LiCl"), float("nan"))])
    with pytest.raises(GPTFFInputError, match="no prototype contains Fe"):
        maker.make({"good": good}, {"Fe": ["Co"]})


def test_cli_refuses_a_partially_occupied_prototype_file(tmp_path, capsys):
    from pymatgen.core import Lattice, Structure

    from gptff_core.cli import main
    from gptff_core.errors import ExitCode

    disordered = Structure(
        Lattice.cubic(5.64), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    disordered.to(filename=str(tmp_path / "mixed.cif"))
    argv = ["screen", str(tmp_path / "mixed.cif"), "--substitute", "Cl=Br"]
    assert main([*argv, "--store", str(tmp_path / "store")]) == ExitCode.BAD_INPUT
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "partial" in line and "mixed.cif" in line
    assert not (tmp_path / "store").exists()


def test_relative_plot_dir_resolves_against_the_callers_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    maker = SubstitutionScreeningMaker(name="plots", plot_dir="hulls", chunk_size=8, **FAST)
    assert maker.plot_dir == str(tmp_path / "hulls")
    store = local_job_store(tmp_path / "store")
    run_flow(maker.make({"salt": structure("NaCl", "rocksalt", a=5.64)}, {"Na": ["K"]}), store)
    (plot,) = latest_campaign(store)["plots"]
    assert plot == str(tmp_path / "hulls" / "plots_Cl-K.png")
    assert (tmp_path / "hulls" / "plots_Cl-K.png").is_file()
