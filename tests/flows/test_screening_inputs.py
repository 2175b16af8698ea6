"""Candidate generation (counts, duplicates, charge balance, volumes) and energetics (formation
energy, energy above hull against hand-computed values, cell policy) of substitution screening."""

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Composition
from pymatgen.io.ase import AseAtomsAdaptor

from gptff_core.errors import GPTFFInputError
from gptff_flows.analysis.energetics import (
    elemental_reference,
    stabilities,
    supercell,
    supercell_repeats,
)
from gptff_flows.analysis.substitution import (
    combinations,
    generate,
    parse_substitutions,
    structure_key,
)


def structure(*args, **kwargs):
    return AseAtomsAdaptor.get_structure(bulk(*args, **kwargs))


@pytest.fixture(scope="module")
def salt():
    return structure("NaCl", "rocksalt", a=5.64, cubic=True)


def test_combinations_with_and_without_the_original_elements():
    subs = {"Na": ["K", "Li"], "Cl": ["Br"], "Mg": ["Ca"]}  # Mg absent from the prototype
    assert len(combinations(subs, ["Na", "Cl"])) == 3 * 2 - 1
    assert combinations(subs, ["Na", "Cl"], keep_original=False) == [
        {"Na": "K", "Cl": "Br"},
        {"Na": "Li", "Cl": "Br"},
    ]


def test_generation_counts_and_removes_duplicates_across_prototypes(salt):
    primitive = structure("NaCl", "rocksalt", a=5.64)
    result = generate({"cubic": salt, "primitive": primitive}, {"Na": ["K", "Li"], "Cl": ["Br"]})
    assert sorted(c.formula for c in result.candidates) == sorted(
        ["NaBr", "KCl", "KBr", "LiCl", "LiBr"]
    )
    assert {c.prototype_id for c in result.candidates} == {"cubic"}
    assert len(result.rejected) == 5
    assert all(reason.startswith("duplicate of cubic:") for _, reason in result.rejected)


def test_charge_balance_filter(salt):
    result = generate({"salt": salt}, {"Cl": ["O", "Br"]}, charge_balanced=True)
    assert [c.formula for c in result.candidates] == ["NaBr"]
    assert result.rejected == [("salt:Cl->O", "not charge balanced")]


def test_ionic_radii_scale_the_volume_with_the_ions(salt):
    result = generate({"salt": salt}, {"Na": ["K", "Li"]}, volume_scaling="ionic-radii")
    per_atom = {c.formula: c.structure.volume / len(c.structure) for c in result.candidates}
    prototype = salt.volume / len(salt)
    assert per_atom["KCl"] > prototype > per_atom["LiCl"]
    unscaled = generate({"salt": salt}, {"Na": ["K"]}, volume_scaling="none").candidates[0]
    assert unscaled.structure.volume == pytest.approx(salt.volume)


@pytest.mark.parametrize("spec", ["Y", "Y=", "=Sc", "Y=Xx", "Qq=Sc"])
def test_bad_substitutions_are_refused(spec):
    with pytest.raises(GPTFFInputError):
        parse_substitutions([spec])


def test_parse_substitutions_merges_repeated_elements():
    assert parse_substitutions(["Y=Sc,In", "Cl=Br", "Y=Er"]) == {
        "Y": ["Sc", "In", "Er"],
        "Cl": ["Br"],
    }


def test_structure_key_depends_on_structure_and_settings(salt):
    settings = {"model": "gptff-v2", "fmax": 0.05}
    moved = salt.copy()
    moved.translate_sites([0], [0.01, 0, 0])
    assert structure_key(salt, settings) == structure_key(salt.copy(), dict(settings))
    assert structure_key(salt, settings) != structure_key(moved, settings)
    assert structure_key(salt, settings) != structure_key(salt, {**settings, "fmax": 0.02})


def test_energy_above_hull_and_formation_energy_against_hand_computed_values():
    """Elements A = Li (−3 eV/atom) and B = Cl (−2 eV/atom); LiCl forms at −1 eV/atom. At 25 %
    Cl the hull lies halfway between Li (0) and LiCl (−1): −0.5 eV/atom of formation energy."""
    phases = [(Composition("Li"), -3.0), (Composition("Cl2"), -4.0), (Composition("LiCl"), -7.0)]
    reference = 3 * -3.0 + -2.0  # Li3Cl
    candidates = [(Composition("Li3Cl"), reference + 4 * f) for f in (-0.4, -0.5, -0.6)]
    result = stabilities(candidates, phases)
    assert [r.formation_energy_per_atom for r in result] == pytest.approx([-0.4, -0.5, -0.6])
    assert [r.e_above_hull for r in result] == pytest.approx([0.1, 0.0, -0.1], abs=1e-9)
    assert result[0].decomposition == pytest.approx({"Li": 0.5, "LiCl": 0.5})


def test_hull_needs_every_elemental_reference():
    with pytest.raises(GPTFFInputError, match="Cl"):
        stabilities([(Composition("LiCl"), -7.0)], [(Composition("Li"), -3.0)])


def test_supercells_reach_the_atom_count_and_stay_compact():
    cell = [[3.0, 0, 0], [0, 3.0, 0], [0, 0, 9.0]]
    repeats = supercell_repeats(cell, 2, 64)
    assert 2 * repeats[0] * repeats[1] * repeats[2] >= 64
    lengths = [3.0 * repeats[0], 3.0 * repeats[1], 9.0 * repeats[2]]
    assert max(lengths) / min(lengths) <= 2
    assert len(supercell(bulk("Cu", "fcc", a=3.6), 64)) >= 64


def test_elemental_references():
    copper, kind = elemental_reference("Cu")
    assert kind == "crystal" and len(copper) == 1
    chlorine, kind = elemental_reference("Cl")
    assert kind == "molecule" and chlorine.get_chemical_formula() == "Cl2"


# ---------------------------------------------------------------- refused before any work

NAN_PROTOTYPE = """
import sys
import numpy as np
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor
from gptff_core.cli import report_input_errors
from gptff_flows.analysis.substitution import generate

salt = AseAtomsAdaptor.get_structure(bulk("NaCl", "rocksalt", a=5.64))
salt.replace(0, "Na", coords=[np.nan, 0.0, 0.0])


def campaign():
    generate({"salt": salt}, {"Na": ["K"]})
    return 0  # not refused: the test fails on this code


sys.exit(report_input_errors("probe", campaign))
"""


def test_a_nan_prototype_is_refused_by_generate_not_a_crash():
    """A NaN coordinate crashed the process inside spglib (rc 139 before the fix); run in a
    subprocess so a regression cannot take the test run down with it."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", NAN_PROTOTYPE], capture_output=True, text=True, timeout=300
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert lines == ["probe: error: prototype 'salt': positions contain NaN or infinity"]


def disordered_salt():
    from pymatgen.core import Lattice, Structure

    return Structure(
        Lattice.cubic(5.64), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


def broken_prototypes():
    """name → (structure, what the refusal says)."""
    from pymatgen.core import Lattice, Structure

    good = structure("NaCl", "rocksalt", a=5.64)
    inf_cell = good.copy()
    inf_cell.lattice = Lattice(good.lattice.matrix * [[1], [1], [np.inf]])
    flat = Structure(
        Lattice([[4.0, 0, 0], [8.0, 0, 0], [0, 0, 4.0]]), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3]
    )
    beyond_pu = Structure(Lattice.cubic(4.0), ["Am", "Cl"], [[0, 0, 0], [0.5] * 3])
    return {
        "disordered": (disordered_salt(), "partial occupancy"),
        "inf_cell": (inf_cell, "NaN or infinity"),
        "flat": (flat, "linearly dependent"),
        "americium": (beyond_pu, "outside the elements GPTFF knows"),
        "atoms": (bulk("NaCl", "rocksalt", a=5.64), "must be a pymatgen Structure"),
    }


@pytest.mark.parametrize("name", list(broken_prototypes()))
def test_broken_prototypes_are_refused_naming_them(name):
    from gptff_core.errors import StructureError

    prototype, reason = broken_prototypes()[name]
    with pytest.raises(StructureError, match=reason) as refused:
        generate({name: prototype}, {"Cl": ["Br"]}, volume_scaling="none", deduplicate=False)
    assert str(refused.value).startswith(f"prototype {name!r}")


def test_a_substituted_element_in_no_prototype_is_refused(salt):
    with pytest.raises(GPTFFInputError, match="no prototype contains Fe"):
        generate({"salt": salt}, {"Fe": ["Co"]})
    with pytest.raises(GPTFFInputError, match="no prototype contains Fe"):
        generate({"salt": salt}, {"Na": ["K"], "Fe": ["Co"]})


def test_a_generation_left_empty_says_why(salt):
    result = generate({"salt": salt}, {"Cl": ["O"]}, charge_balanced=True, keep_original=False)
    assert result.candidates == []
    assert result.why_empty() == "no candidates: not charge balanced: salt:Cl->O"
    kept = generate({"salt": salt}, {"Cl": ["Br"]}, volume_scaling="none")
    assert kept.why_empty() is None
