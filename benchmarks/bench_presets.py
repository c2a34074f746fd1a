#!/usr/bin/env python
"""The presets on every labeled project at hand, at an equal training budget, over seeds (issue #27).

Each arm is one of :data:`~element_lightning_pose.engine.training.advice.PRESETS`, applied
through :func:`~element_lightning_pose.engine.training.advice.preset_params` as ``elp train``'s
advice applies it (``full_resolution_crops`` at :func:`~element_lightning_pose.engine.training.advice.budget_resize`,
the largest input that predicts at 20 frames/s on a CPU), over the shared settings of
``bench_small_animal.base_config`` (ImageNet efficientnet_lite0, the wall-time budget
``training.max_time_s``, the backbone unfrozen at ``--unfreeze-epoch``, no step decay):

- ``default``: the whole frame resized to 256x256;
- ``small_animal_crop_zoom``: a detector finds the animal, the pose model sees a zoomed crop;
- ``full_resolution_crops``: the frame near its own resolution, trained on random crops.

Projects (:data:`PROJECTS`): the synthetic arena (generated in ``--work``, a second video with
ground truth) and the real projects found under ``--data`` (mirror-mouse with its test video,
DeepLabCut's reaching example, the SLEAP fly; see ``benchmarks/results/presets.md`` for where
each comes from). Every run is scored by ``bench_small_animal.train_and_score``: test error in
original-frame pixels on the test split of seed 0 (the same frames for every arm and seed) and,
where the project has a video, jumps (frames with a keypoint moving > 30 px since the previous
frame) and likelihood on every frame of it. For each project the script also prints the
features a rule could use (frame size, the animal's extent in frame pixels, as a fraction of
the frame and in heatmap pixels, label count, views).

Each run is saved as JSON in ``--work/results`` as soon as it ends; a run is claimed by a
``.claim`` file first, so two processes started with the same command share the queue. A
second call skips what is saved (``--redo`` to repeat). The table is rebuilt from every saved
run; text after the ``## Notes`` heading of an existing ``--out`` is kept.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_presets.py --data /var/tmp/elp-presets-data
           --budget-s 240 --seeds 0 1 [--projects arena mirror reaching fly] [--work /var/tmp/elp-presets]
"""

from __future__ import annotations

import argparse
import json
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import RESULTS, header, markdown_table, write_results
from bench_small_animal import base_config, dataset, score, train_and_score

from element_lightning_pose.engine.data.projects import load_project
from element_lightning_pose.engine.training.advice import PRESETS, advise, animal_extent, preset_params

ARMS = tuple(PRESETS)  # default, full_resolution_crops, small_animal_crop_zoom
BACKBONE = "efficientnet_lite0"
WITHIN = 1.10  # an arm "ties" the best when its mean test error is within 10% of the best arm's
NOTES = "## Notes"


@dataclass(frozen=True)
class Project:
    folder: str  # under --data
    csv: str  # relative to the project
    video: str | None = None  # a video of the project (relative), scored for jumps and likelihood
    about: str = ""


PROJECTS: dict[str, Project | None] = {
    "arena": None,  # synthetic: bench_small_animal.dataset("arena") generates it in --work
    "mirror": Project("mirror-mouse-example", "CollectedData.csv", "videos/test_vid.mp4", "two views in one frame"),
    "reaching": Project("dlc-reaching-example", "labeled-data/reachingvideo1/CollectedData_Mackenzie.csv"),
    "fly": Project("fly", "CollectedData.csv", about="SLEAP fly, egocentric crops"),
}


def project_data(name: str, args: argparse.Namespace) -> dict:
    """Root, label CSV, video (or None) and whether it is synthetic, as ``train_and_score`` takes them."""
    spec = PROJECTS[name]
    if spec is None:
        return dataset(name, args.work)
    root = args.data / spec.folder
    if not root.is_dir():
        raise SystemExit(f"{root}: project {name!r} not found under --data")
    return {"root": root, "csv": spec.csv, "video": root / spec.video if spec.video else None}


def features(data: dict) -> dict:
    """What a rule could read from the project alone (the advice at the defaults, with this backbone)."""
    labels, _ = load_project(data["root"], data["csv"])
    advice = advise(labels, {"data": {"csv_file": data["csv"]}, "model": {"backbone": BACKBONE}})
    height, width = advice.frame_size
    extent = animal_extent(labels.keypoints)
    extent = extent[np.isfinite(extent).all(axis=1)]
    fraction = float(np.median(np.maximum(extent[:, 0] / width, extent[:, 1] / height))) if len(extent) else None
    return {
        "frame_size": list(advice.frame_size),
        "labels": len(labels),
        "keypoints": int(labels.keypoints.shape[1]),
        "views": len(set(labels.views)) if labels.views else 1,
        "animal_frame_px": advice.animal_frame_px,
        "animal_fraction": fraction,
        "animal_heatmap_px": advice.animal_heatmap_px,
        "budget_resize": list(advice.budget_resize),
        "animal_heatmap_px_budget": advice.animal_heatmap_px_budget,
        "advice_preset": advice.preset,
    }


def arm_config(arm: str, data: dict, found: dict, args: argparse.Namespace, seed: int) -> dict:
    """The preset ``arm`` over the shared settings, as ``elp train``'s advice applies it."""
    base = base_config(data, args.budget_s, args.unfreeze_epoch, seed)
    frame_size = (int(found["frame_size"][0]), int(found["frame_size"][1]))
    resize = (int(found["budget_resize"][0]), int(found["budget_resize"][1]))
    return preset_params(arm, frame_size=frame_size, image_resize=resize, base=base)


def features_of(name: str, args: argparse.Namespace) -> dict:
    """:func:`features` of project ``name``, saved in ``--work/features`` (computed once)."""
    saved = args.work / "features" / f"{name}.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    found = features(project_data(name, args))
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(found, indent=2))
    return found


def claim(path: Path) -> bool:
    """Create ``path`` unless it exists (another process has the run)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def run(name: str, arm: str, seed: int, args: argparse.Namespace) -> dict:
    data = project_data(name, args)
    config = arm_config(arm, data, features_of(name, args), args, seed)
    model_dir = args.work / "models" / f"{name}_{arm}_s{seed}"
    result = train_and_score(data, config, model_dir)
    input_size = config["data"]["image_resize"]
    return {
        "project": name,
        "arm": arm,
        "seed": seed,
        "budget_s": args.budget_s,
        "input": f"{input_size[0]}x{input_size[1]}",
        **result,
    }


SCORES = ("test", "jump_frames", "video_frames", "missed_frames", "likelihood_median", "video", "video_gross_share")


def rescore(args: argparse.Namespace, results_dir: Path) -> None:
    """Score saved models again (inference changed, training did not); keep what they replace."""
    for seed in args.seeds:
        for name in args.projects:
            for arm in args.arms:
                saved = results_dir / f"{name}_{arm}_s{seed}.json"
                if not saved.is_file():
                    continue
                result = json.loads(saved.read_text())
                print(f"{saved.stem}: scoring the saved model again", flush=True)
                before = {k: result[k] for k in SCORES if k in result}
                fresh = score(project_data(name, args), args.work / "models" / saved.stem)
                result.setdefault("before_rescore", []).append(
                    {**before, "when": result.get("rescored", result["when"])}
                )
                result.update({k: v for k, v in fresh.items() if k not in ("load_average", "when", "cpu")})
                result["rescored"] = fresh["when"]
                saved.write_text(json.dumps(result, indent=2))
                print(json.dumps(result), flush=True)


def _rescore_notes(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        for before in r.get("before_rescore", []):
            test = before["test"]
            lines.append(
                f"- {r['project']} {r['arm']} seed {r['seed']}: scored again on {r['rescored']} with the inference "
                f"code of that day (training unchanged); before: test mean {_num(test['mean'])} px, "
                f"{test.get('missed', 0)} test keypoints missed"
                + (f", {before['jump_frames']} jump frames" if "jump_frames" in before else "")
                + f" ({before['when']})"
            )
    return lines


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _feature_rows(args: argparse.Namespace) -> list[list[str]]:
    rows = []
    for name, spec in PROJECTS.items():
        saved = args.work / "features" / f"{name}.json"
        if not saved.is_file():  # a project this work folder never saw
            continue
        f = json.loads(saved.read_text())
        views = f"{f['views']}" + (f" ({spec.about})" if spec is not None and spec.about else "")
        rows.append(
            [
                name,
                f"{f['frame_size'][0]}x{f['frame_size'][1]}",
                str(f["labels"]),
                str(f["keypoints"]),
                views,
                _num(f["animal_frame_px"], 0),
                _num(f["animal_fraction"], 2),
                _num(f["animal_heatmap_px"]),
                f"{f['budget_resize'][0]}x{f['budget_resize'][1]}",
                _num(f["animal_heatmap_px_budget"]),
                f["advice_preset"],
            ]
        )
    return rows


def _run_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        video = r.get("video", {})
        jumps = f"{r['jump_frames']} / {r['video_frames']}" if "jump_frames" in r else "-"
        if r.get("missed_frames"):
            jumps += f" ({r['missed_frames']} missed)"
        likelihood = (
            f"{r['likelihood_median']:.2f} ({r['likelihood_keypoint_medians'][0]:.2f}-"
            f"{r['likelihood_keypoint_medians'][1]:.2f})"
            if "likelihood_median" in r
            else "-"
        )
        rows.append(
            [
                r["project"],
                r["arm"],
                str(r["seed"]),
                r["input"],
                _num(r["test"]["mean"]),
                _num(r["test"]["median"]),
                _num(r["test"]["p95"]),
                _missed(r),
                jumps,
                likelihood,
                _num(video.get("mean")),
                str(r["epochs"]),
                f"{r['train_wall_s']:.0f}",
                _num(r.get("frames_per_s")),
                "/".join(str(v) for v in r["load_average"]),
                r["when"],
            ]
        )
    return rows


def _missed(r: dict) -> str:
    test = r["test"]
    return f"{test.get('missed', 0)} / {test['n'] + test.get('missed', 0)}"


def summarise(results: list[dict]) -> dict[str, dict[str, dict]]:
    """Per project and arm over its seeds: mean test mean (None when a run placed no test keypoint),
    its range, mean p95, missed keypoints, mean jumps and epochs."""
    summary: dict[str, dict[str, dict]] = {}
    for name in PROJECTS:
        for arm in ARMS:
            runs = [r for r in results if r["project"] == name and r["arm"] == arm]
            if not runs:
                continue
            means = [r["test"]["mean"] for r in runs]
            scored = [m for m in means if m is not None]
            jumps = [r["jump_frames"] for r in runs if "jump_frames" in r]
            summary.setdefault(name, {})[arm] = {
                "seeds": len(runs),
                "mean": float(np.mean(scored)) if len(scored) == len(means) else None,
                "range": (min(scored), max(scored)) if scored else None,
                "p95": float(np.mean([r["test"]["p95"] for r in runs])) if len(scored) == len(means) else None,
                "missed": sum(r["test"].get("missed", 0) for r in runs),
                "keypoints": sum(r["test"]["n"] + r["test"].get("missed", 0) for r in runs),
                "jumps": float(np.mean(jumps)) if jumps else None,
                "epochs": float(np.mean([r["epochs"] for r in runs])),
            }
    return summary


def _summary_rows(summary: dict[str, dict[str, dict]]) -> tuple[list[list[str]], list[str]]:
    rows, winners = [], []
    for name, arms in summary.items():
        # a missed keypoint is a frame without a pose for the user: an arm with misses ranks after every other
        ranked = {arm: s["mean"] for arm, s in arms.items() if s["mean"] is not None and not s["missed"]}
        best_arm = min(ranked, key=ranked.__getitem__) if ranked else None
        best = ranked[best_arm] if best_arm else None
        for arm, s in arms.items():
            versus = "-" if s["mean"] is None or best is None else f"{s['mean'] / best:.2f}"
            if s["mean"] is None:
                tie = "no (a run placed no test keypoint)"
            elif s["missed"]:
                tie = f"no ({s['missed']} keypoints missed)"
            elif best is None:
                tie = "-"
            else:
                tie = "best" if arm == best_arm else ("yes" if s["mean"] <= WITHIN * best else "no")
            spread = f" ({s['range'][0]:.1f}-{s['range'][1]:.1f})" if s["range"] else ""
            rows.append(
                [
                    name,
                    arm,
                    str(s["seeds"]),
                    f"{_num(s['mean'])}{spread}",
                    _num(s["p95"]),
                    f"{s['missed']} / {s['keypoints']}",
                    _num(s["jumps"], 0),
                    _num(s["epochs"], 0),
                    versus,
                    tie,
                ]
            )
        if best_arm is None:
            winners.append(f"- **{name}**: no arm placed every test keypoint on every seed")
            continue
        ties = [a for a in ranked if a != best_arm and ranked[a] <= WITHIN * best]
        winners.append(
            f"- **{name}**: {best_arm} ({best:.1f} px, mean of {arms[best_arm]['seeds']} seeds)"
            + (f"; within 10%: {', '.join(ties)}" if ties else "; no other arm within 10%")
        )
    return rows, winners


def table(results: list[dict], args: argparse.Namespace) -> str:
    cpus = sorted({r["cpu"] for r in results})
    summary = summarise(results)
    summary_rows, winners = _summary_rows(summary)
    order = {name: i for i, name in enumerate(PROJECTS)}
    results = sorted(results, key=lambda r: (order.get(r["project"], 99), ARMS.index(r["arm"]), r["seed"]))
    lines = [
        *header("Presets on every labeled project at hand (issue #27)"),
        f"The runs ran on: {', '.join(cpus)}; two runs at a time, one thread each (`load avg`: the 1-minute "
        "load before/after each run).",
        "",
        "Every arm: ImageNet efficientnet_lite0, "
        f"{args.budget_s:.0f} s of training wall time (`training.max_time_s`; crop zoom shares it between its "
        f"two stages), backbone unfrozen at epoch {args.unfreeze_epoch}, no step decay, batch 8. Test = the "
        "labeled test split of split seed 0 (10%), the same frames for every arm and training seed; errors in "
        "original-frame pixels over the keypoints placed; missed = labeled test keypoints the model left "
        "NaN (a crop-zoom frame whose detection failed). Video: every frame of the project's video; jumps = frames where a keypoint "
        "moved > 30 px since the previous frame; likelihood = median over (frame, keypoint) (range of the "
        "per-keypoint medians); arena video error against its ground truth.",
        "",
        "## Project features (what a rule can read from the project alone)",
        "",
        "animal = the box of a frame's labeled keypoints, its larger side (median over frames); fraction = "
        "the larger of box width / frame width and box height / frame height; heatmap px at 256x256 and at "
        "the budget input (`budget_resize`: the largest input predicting at 20 frames/s on 2 cores); "
        "advice today = `advise()` at the defaults.",
        "",
        *markdown_table(
            [
                "project",
                "frame",
                "labels",
                "keypoints",
                "views",
                "animal px",
                "animal / frame",
                "heatmap px at 256",
                "budget input",
                "heatmap px at budget",
                "advice today",
            ],
            _feature_rows(args),
        ),
        "",
        "## Per project and arm (mean over seeds)",
        "",
        *markdown_table(
            [
                "project",
                "arm",
                "seeds",
                "test mean (range)",
                "test p95",
                "missed",
                "jumps",
                "epochs",
                "x best",
                "within 10%",
            ],
            summary_rows,
        ),
        "",
        "Best arm per project (lowest mean test error over seeds, among the arms that placed every test keypoint; "
        "a miss leaves the user without a pose on that frame):",
        "",
        *winners,
        "",
        "## Every run",
        "",
        *markdown_table(
            [
                "project",
                "arm",
                "seed",
                "input",
                "test mean",
                "test median",
                "test p95",
                "missed",
                "video jumps",
                "likelihood",
                "video error",
                "epochs",
                "train s",
                "predict fps",
                "load avg",
                "when",
            ],
            _run_rows(results),
        ),
        "",
    ]
    rescored = _rescore_notes(results)
    if rescored:
        lines += ["Runs scored again after training (`--rescore`):", "", *rescored, ""]
    failed = sorted(p.stem for p in (args.work / "results").glob("*.failed"))
    if failed:
        lines += [f"Failed runs (see `{args.work}/results/*.failed`): {', '.join(failed)}", ""]
    return "\n".join(lines)


def kept_notes(out: Path) -> str:
    """The hand-written notes of an existing results file (from the ``## Notes`` heading on)."""
    if not out.is_file():
        return ""
    text = out.read_text()
    return text[text.index(NOTES) :] if NOTES in text else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/var/tmp/elp-presets-data"), help="the real projects")
    parser.add_argument("--projects", nargs="+", default=list(PROJECTS), choices=list(PROJECTS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="training seeds (weights, batches)")
    parser.add_argument("--budget-s", type=float, default=240.0, help="training wall time per run")
    parser.add_argument("--unfreeze-epoch", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/elp-presets"))
    parser.add_argument("--out", type=Path, default=RESULTS / "presets.md")
    parser.add_argument("--redo", action="store_true", help="repeat runs already saved in --work")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table from the saved runs")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the saved models of --projects / --arms / --seeds again with today's inference code (no "
        "training); the scores they replace are kept in the run's JSON and listed under the table",
    )
    args = parser.parse_args()
    results_dir = args.work / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in args.projects:
        print(name, json.dumps(features_of(name, args)), flush=True)
    if args.rescore:
        rescore(args, results_dir)
    for seed in [] if args.table_only or args.rescore else args.seeds:
        for name in args.projects:
            for arm in args.arms:
                key = f"{name}_{arm}_s{seed}"
                saved = results_dir / f"{key}.json"
                done = saved.is_file() or (results_dir / f"{key}.failed").is_file()
                if (done and not args.redo) or not claim(results_dir / f"{key}.claim"):
                    continue
                print(f"{key}: training for {args.budget_s:.0f} s", flush=True)
                try:
                    result = run(name, arm, seed, args)
                except Exception:  # one failed run must not stop the queue: it is listed under the table
                    (results_dir / f"{key}.failed").write_text(traceback.format_exc())
                    print(traceback.format_exc(), flush=True)
                    continue
                finally:
                    (results_dir / f"{key}.claim").unlink()
                saved.write_text(json.dumps(result, indent=2))
                print(json.dumps(result), flush=True)
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    notes = kept_notes(args.out)
    print(write_results(args.out, table(results, args) + ("\n" + notes if notes else "")))


if __name__ == "__main__":
    main()
