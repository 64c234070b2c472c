"""A 3x3 X/Y/Z plot on the demo model vs the nine same generations run one by one, in one process
on one engine (the model loaded once beforehand). Target: the grid within 1.1x of the nine
(planning, the legend and the grid PNG cost next to nothing).

    python benchmarks/xyz.py --steps 10 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from emaki.devices import DevicePolicy
from emaki.engine import Engine
from emaki.params import GenerationParams
from emaki.workspace import Workspace
from emaki.xyz import GridSpec, plan_grid, run_grid

X = "CFG Scale: 5, 7, 9"
Y = "Sampler: Euler a, Euler, DPM++ 2M Karras"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    engine = Engine(Workspace(home), DevicePolicy.choose("fp32", threads=args.threads))
    params = GenerationParams.create(prompt="1girl, red hair, green eyes, smile", steps=args.steps, seed=1,
                                     width=args.size, height=args.size)
    spec = GridSpec.create(x=X, y=Y)
    cells = [cell.params for cell in plan_grid(params, spec, engine.workspace).cells]
    engine.generate(params, save=False)  # load the model, warm the caches
    separate, grid = [], []

    def nine_calls(index: int) -> None:
        for cell in cells:
            engine.generate(cell, out_dir=home / f"separate-{index}")

    def one_grid(index: int) -> None:
        run_grid(engine, params, spec, out_dir=home / f"grid-{index}")

    for index in range(args.rounds):
        # Alternating which goes first, so a busy neighbour or a warming cache favours neither.
        for run, times in ((nine_calls, separate), (one_grid, grid))[:: 1 if index % 2 == 0 else -1]:
            start = time.perf_counter()
            run(index)
            times.append(time.perf_counter() - start)
    nine, plot = statistics.median(separate), statistics.median(grid)
    print(f"{len(cells)} cells, {args.steps} steps, {args.size}x{args.size}, {args.rounds} rounds (medians)")
    print(f"nine generate calls: {nine:.3f} s   grid: {plot:.3f} s   ratio grid/nine: {plot / nine:.3f}")
    print(f"fastest rounds: {min(separate):.3f} s vs {min(grid):.3f} s   ratio: {min(grid) / min(separate):.3f}")


if __name__ == "__main__":
    main()
