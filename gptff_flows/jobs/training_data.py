"""Training frames for the fine-tune job of :mod:`gptff_flows.jobs.finetune_md`: from files,
from job-store documents (atomate2 VASP or force-field task documents), or from a store query.

Stresses in documents are read as kbar with VASP's sign (atomate2's convention) and converted to
eV/Å³ with ASE's sign; energies eV, forces eV/Å.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobflow import CURRENT_JOB
from pymatgen.core import Structure

from gptff_core.errors import GPTFFInputError


def _step_frames(step: dict, source: str, index: int, group: str):
    """A frame from one ionic step of an atomate2 document (stress kbar, VASP sign)."""
    from gptff_core.training.datasets import make_frame, vasp_stress_to_ase

    structure = step.get("structure") or step.get("struct_or_mol")
    if structure is None:
        return None
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    energy = step.get("e_0_energy", step.get("energy", step.get("e_fr_energy")))
    stress = step.get("stress")
    stress = None if stress is None else vasp_stress_to_ase(stress)
    return make_frame(
        structure,
        energy,
        step.get("forces"),
        stress,
        source=source,
        index=index,
        group=group,
    )


def frames_from_documents(documents: Sequence[dict]) -> list:
    """Training frames from job-store documents (or their ``output``).

    Reads, in this order of preference: ``calcs_reversed[*].output.ionic_steps`` (atomate2 VASP
    task documents), ``output.ionic_steps`` or ``ionic_steps`` (atomate2 force-field documents),
    else the document's ``structure`` with ``energy``/``forces``/``stress`` (or those under
    ``output``). Stresses are read as kbar with VASP's sign (atomate2's convention). Each
    document is one trajectory for the train/validation split.

    Raises:
        GPTFFInputError: a document with no labelled structure.
    """
    frames = []
    for k, document in enumerate(documents):
        doc = document.get("output", document) if isinstance(document, dict) else document
        if hasattr(doc, "model_dump"):
            doc = doc.model_dump()
        uuid = document.get("uuid", f"document {k}") if isinstance(document, dict) else k
        source, steps = f"store:{uuid}", []
        for calc in doc.get("calcs_reversed") or []:
            steps += ((calc.get("output") or {}).get("ionic_steps")) or []
        if not steps:
            inner = doc.get("output") if isinstance(doc.get("output"), dict) else {}
            steps = doc.get("ionic_steps") or inner.get("ionic_steps") or []
        if not steps:
            inner = doc.get("output") if isinstance(doc.get("output"), dict) else doc
            steps = [{**inner, "structure": doc.get("structure") or inner.get("structure")}]
        found = [_step_frames(step, source, i, source) for i, step in enumerate(steps)]
        found = [f for f in found if f is not None and f.energy is not None]
        if not found:
            raise GPTFFInputError(f"{source}: no labelled structure (structure and energy)")
        frames += found
    return frames


def collect_frames(train_files, train_documents, train_query, file_format) -> tuple[list, list]:
    """(frames, their sources) from ``train_files`` (read with ``file_format``, None: guessed),
    ``train_documents`` and the documents ``train_query`` finds in the running job's store.

    Raises:
        GPTFFInputError: no data at all, a query with no store or no match.
    """
    from gptff_core.training.datasets import read_datasets

    frames, sources = [], []
    if train_files:
        frames += read_datasets([str(p) for p in train_files], file_format)
        sources += [str(p) for p in train_files]
    documents = list(train_documents or [])
    if train_query:
        store = CURRENT_JOB.store
        if store is None:
            raise GPTFFInputError("train_query needs a job store (run the flow with jobflow)")
        found = list(store.query(train_query, load=True))
        if not found:
            raise GPTFFInputError(f"train_query {train_query} matched no document in the store")
        documents += found
    if documents:
        frames += frames_from_documents(documents)
        sources += [f"{len(documents)} store document(s)"]
    if not frames:
        raise GPTFFInputError("no training data: give train_files, train_documents or train_query")
    return frames, sources
