"""Submit GPTFF EOS flows to the jobflow-remote project in gptff.yaml.

    python submit_eos.py Cu.cif NaCl.cif --worker local [--project gptff] [--model gptff-v2]

Any other GPTFF flow is submitted the same way: build it with a Maker and pass it to
``gptff_flows.run.submit_flow(flow, worker=..., project=...)``.
"""

import argparse

from pymatgen.core import Structure

from gptff_flows.flows.eos import GPTFFEosMaker
from gptff_flows.run import check_remote_project, submit_flow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="structure files pymatgen reads")
    parser.add_argument("--worker", default="local", help="worker name in the project")
    parser.add_argument("--project", default=None, help="jobflow-remote project name")
    parser.add_argument("--model", default="gptff-v2", help="registry name or checkpoint path")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    check_remote_project(args.project, args.worker)  # before reading or building anything
    for path in args.files:
        maker = GPTFFEosMaker(name=f"GPTFF EOS {path}", model=args.model, dtype=args.dtype)
        flow = maker.make(Structure.from_file(path))
        ids = submit_flow(flow, worker=args.worker, project=args.project)
        print(f"{path}: submitted flow {flow.uuid} ({len(ids)} jobs)")
    return 0


if __name__ == "__main__":
    import sys

    from gptff_core.cli import report_input_errors

    sys.exit(report_input_errors("submit_eos.py", main))
