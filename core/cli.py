"""Argument parsing for ``python -m core``; each command is a thin caller of the library."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.analysis import data
from core.serving.errors import JobError
from core.serving.framing import STANDARD_SIDE
from core.serving.settings import DEFAULT_OPERATING_POINT, OPERATING_POINTS
from core.serving.site import SiteProfileError


def _data_dir(value: str | None) -> Path:
    chosen = Path(value) if value else data.default_data_dir()
    if chosen is None:
        raise SystemExit(f"no data folder: pass --data DIR or set ${data.DATA_ENV}")
    return chosen


def _positive(text: str) -> int:
    """A count of at least one (argparse's usage error otherwise, not a traceback later)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a count of at least 1")
    return value


def _learning_rate(value: str) -> float | str:
    return value if value == "auto" else float(value)


def cmd_train(args) -> int:
    from core.learning.train import TrainConfig, train

    config = {"recipe": {}}
    if args.config:
        from core.learning.tuning import load_config

        config = load_config(Path(args.config))
    arch = args.arch or config.get("arch")
    if not arch:
        raise SystemExit("train needs --arch NAME or --config FILE")
    extra = {"hyperparameters_from": config["hyperparameters_from"]} if "hyperparameters_from" in config else {}
    if args.set:
        extra.setdefault("hyperparameters_from", "hand-set recipe in core/learning/zoo.py")
        extra["hyperparameters_from"] += "; set on the command line: " + ", ".join(args.set)
    train(TrainConfig(arch=arch, data_dir=_data_dir(args.data), name=args.name, epochs=args.epochs,
                      batch_size=args.batch_size, learning_rate=None if args.lr in (None, "auto") else args.lr,
                      size=args.size or config.get("size"), seed=args.seed, init_seed=args.init_seed,
                      weights=args.weights, max_train_images=args.max_train_images,
                      overrides={**config["recipe"], **_recipe_settings(args.set)}, lr_auto=args.lr == "auto",
                      models_dir=Path(args.models_dir) if args.models_dir else None, ensemble=args.ensemble,
                      frame_side=args.frame, equalise=args.equalise, deterministic=args.deterministic, **extra))
    return 0


def _member(text: str) -> tuple[str, Path | None]:
    """"NAME" or "NAME@DIR": a trained model and the folder that holds it."""
    name, _, folder = text.partition("@")
    return name, Path(folder) if folder else None


def cmd_ensemble(args) -> int:
    from core.learning.ensemble import assemble
    from core.serving import registry

    if len(args.member) < 2:
        raise SystemExit("ensemble needs at least two --member NAME[@DIR]")
    members = [_member(m) for m in args.member]
    for name, folder in members:  # a mistyped member is named before any work
        registry.load_card(name, folder)
    assemble(members, args.name, _data_dir(args.data), Path(args.models_dir) if args.models_dir else None)
    return 0


def cmd_train_localiser(args) -> int:
    from core.learning.framing import train_localiser

    card = train_localiser(_data_dir(args.data), seed=args.seed, epochs=args.epochs,
                           max_train_images=args.max_train_images)
    print(f"wrote {card['file']} (sha256 {card['sha256'][:12]}…)")
    return 0


def _numbers(text: str) -> tuple[float, ...]:
    """"1,1.12,0.9" as a tuple field (test-time zooms, sharpness widths)."""
    return tuple(float(z) for z in text.split(","))


def _flag(text: str) -> bool:
    """"true"/"false" (or yes/no, 1/0) as a bool: bool("false") would be True."""
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if text.lower() not in words:
        raise ValueError(text)
    return words[text.lower()]


def _recipe_settings(settings: list[str]) -> dict:
    """`--set mixup=0.2 --set sampling=balanced` as recipe overrides, typed like the Recipe's fields."""
    import dataclasses

    from core.learning.zoo import Recipe

    fields = {f.name: type(getattr(Recipe(), f.name)) for f in dataclasses.fields(Recipe)}
    overrides = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in fields or not value:
            raise SystemExit(f"--set {setting}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        try:
            parse = {tuple: _numbers, bool: _flag}.get(fields[key], fields[key])
            overrides[key] = parse(value)
        except ValueError:
            raise SystemExit(f"--set {setting}: {value!r} is not a valid {fields[key].__name__}") from None
    return overrides


def cmd_lr_find(args) -> int:
    import json

    from core.analysis.figures import lr_plot
    from core.learning.pipeline import load_split
    from core.learning.tuning import find_learning_rate
    from core.learning.zoo import get_architecture

    arch = get_architecture(args.arch, args.size)
    train_set, _ = load_split(_data_dir(args.data), arch.preprocess, args.seed, args.max_train_images,
                              recipe=arch.recipe)
    result = find_learning_rate(arch, arch.recipe, train_set, steps=args.steps)
    for rate, loss in list(zip(result["rates"], result["smoothed"]))[:: max(1, len(result["rates"]) // 25)]:
        print(f"  lr {rate:9.2e}  smoothed loss {loss:.4f}")
    diverged = f"; the loss diverged at {result['diverged_at']:.2e}" if result["diverged_at"] else ""
    print(f"suggested learning rate: {result['suggestion']:.2e} ({result['method']}){diverged}")
    if args.plot:
        lr_plot(result).write_html(args.plot)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def cmd_tune(args) -> int:
    from core.learning.tuning import SEARCH_SPACE, tune

    print("search space: " + "; ".join(f"{k}: {v}" for k, v in SEARCH_SPACE.items()))
    rows = tune(args.arch, _data_dir(args.data), args.trials, Path(args.dir), args.max_minutes, args.epochs,
                max_train_images=args.max_train_images)
    print(f"{'trial':<8}{'val AUC':>9}  hyper-parameters")
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("trial", "val_auc"))
        print(f"{row['trial']:<8}{row['val_auc']:>9.4f}  {params}")
    if rows:
        print(f"best configuration: {Path(args.dir) / (args.arch + '_best.json')} "
              f"(train it with: python -m core train --config that file)")
    return 0


def _model_names(choice: str | None) -> list[str]:
    from core.serving import registry

    if choice in (None, "default"):
        return [registry.default_model_name()]
    return registry.model_names() if choice == "all" else [choice]


def _bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=None)  # silent when not a terminal


def cmd_evaluate(args) -> int:
    import json

    from core.analysis import evaluation, reports
    from core.serving import registry
    from core.serving.predictor import Predictor

    data_dir = _data_dir(args.data)
    default = registry.default_model_name()
    records = []
    names = [None] if args.site and not args.model else _model_names(args.model)
    for name in names:
        predictor = _predictor(name, args.site) if args.site else Predictor.load(name)
        name = predictor.name
        with _bar(None, f"evaluating {name}") as bar:
            scored = reports.score_split(predictor, data_dir, args.split, progress=bar)
        record = reports.evaluate(predictor, scored, args.split, name == default, args.save_report)
        if predictor.site:
            record["site"] = predictor.site.name
        if args.top_losses:
            record["top_losses"] = reports.top_losses(scored, args.top_losses)
        records.append(record)
        if args.save_report:
            registry.save_report(name, args.split, record)
    width = max([len("model"), *(len(r["model"]) + 1 for r in records)])  # + 1 for the default's star
    print(f"{'model':<{width}}{'n':>6}{'thr':>7}{'acc':>7}{'sens':>7}{'spec':>7}{'prec':>7}{'f1':>7}{'auc':>7}"
          f"  screening sens/spec  best spec at sens {evaluation.SCREENING_SENSITIVITY}")
    for r in records:
        s = r["operating_points"]["screening"]
        print(f"{r['model'] + ('*' if r['default'] else ''):<{width}}{r['n']:>6}{r['threshold']:>7.3f}{r['accuracy']:>7.3f}"
              f"{r['sensitivity']:>7.3f}{r['specificity']:>7.3f}{r['precision']:>7.3f}{r['f1']:>7.3f}"
              f"{r['auc']:>7.3f}  {s['sensitivity']:.3f}/{s['specificity']:.3f}"
              f"{r['specificity_at_screening_sensitivity']:>28.3f}")
        for point, at in r["operating_points"].items():
            ci = at["95ci"]
            if ci:
                print(f"    {point}: " + ", ".join(f"{k} {at[k]:.3f} [{ci[k][0]:.3f}, {ci[k][1]:.3f}]"
                                                 for k in ("sensitivity", "specificity")))
        for loss in r.get("top_losses", []):
            print(f"    loss {loss['loss']:.3f}  p={loss['probability']:.3f}  {loss['label']:<9} {loss['file']}")
        if r["unreadable"]:
            print(f"    {len(r['unreadable'])} unreadable file(s) left out")
    print("* default model; metrics at the balanced operating point; [95% intervals over resampled patients]")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


def _predictor(model: str | None, site: str | None):
    """The model to screen with: the site profile's model when a profile is given."""
    from core.serving import registry
    from core.serving.predictor import Predictor
    from core.serving.site import SiteProfile, SiteProfileError

    try:
        profile = SiteProfile.load(site) if site else None
        return Predictor.load(model or (profile.model if profile else registry.default_model_name()), site=profile)
    except SiteProfileError as exc:
        raise SystemExit(f"refused: {exc}") from None


def cmd_record_check(args) -> int:
    import datetime as dt
    import json

    from core.analysis import checks

    try:
        added = checks.record_checks(json.loads(Path(args.file).read_text()), args.date or dt.date.today().isoformat(),
                                     args.data_note, args.by)
    except checks.CheckError as exc:
        raise SystemExit(f"record-check: {exc}") from None
    for check in added:
        print(f"{check['model']} (file {check['sha256'][:12]}…): AUC {check['auc']:.3f}, screening sensitivity "
              f"{check['screening']['sensitivity']:.3f}, specificity {check['screening']['specificity']:.3f}")
    return 0


def cmd_screen_archive(args) -> int:
    """`screen SRC --out DIR`: the archive job (core.serving.archive), batched and resumable."""
    from core.serving import archive
    from core.serving.site import SiteProfile

    if len(args.paths) != 1 or args.heatmaps or args.format == "json":
        raise JobError("with --out, give one source folder (SRC), --format parquet or csv, and no --heatmaps")
    # The profile read once: its name, model and bytes from one version of the file.
    content = _read_site_profile(Path(args.site)) if args.site else None
    profile = SiteProfile.from_bytes(content, Path(args.site).stem) if content else None
    spec = archive.JobSpec(args.model or (profile.model if profile else None), site_profile=content,
                           site_name=profile.name if profile else "", operating_point=args.operating_point)
    with _bar(None, "screening") as bar:
        def progress(total: int, done_before: int):
            bar.reset(total)
            if done_before:
                bar.write(f"{done_before} files already screened by earlier runs of this job: skipped")
            return bar.update

        summary = archive.screen_archive(
            Path(args.paths[0]), Path(args.out), spec, args.format or "parquet", args.engine, args.resume,
            Path(args.manifest) if args.manifest else None, args.batch_size, args.workers, args.address,
            progress, args.path_column, Path(args.key_file) if args.key_file else None)
    print("\n".join(summary.lines()), file=sys.stderr)
    if summary.run:
        print(f"rows written to {Path(args.out) / summary.run}", file=sys.stderr)
    return 0


def cmd_rethreshold(args) -> int:
    """`screen --rethreshold DIR --site SITE.json --out NEW`: an archive job's rows at a site's points."""
    from core.serving.archive.rethreshold import rethreshold
    from core.serving.site import SiteProfile, SiteProfileError

    ignored = [name for name, given in (("files to screen", args.paths), ("--model", args.model),
                                        ("--format", args.format), ("--resume", args.resume),
                                        ("--manifest", args.manifest), ("--heatmaps", args.heatmaps),
                                        ("--engine ray", args.engine != "local")) if given]
    if not (args.site and args.out) or ignored:
        not_taken = f" (not {', '.join(ignored)})" if ignored else ""
        raise JobError(f"--rethreshold DIR needs --site SITE.json and --out NEW, and takes only --operating-point "
                       f"besides{not_taken}: the rows keep their model, format and files")
    content = _read_site_profile(Path(args.site))
    try:
        profile = SiteProfile.from_bytes(content, Path(args.site).stem)
    except SiteProfileError as exc:
        raise JobError(str(exc)) from None
    summary = rethreshold(Path(args.rethreshold), Path(args.out), profile, content, args.operating_point)
    print("\n".join(summary.lines()), file=sys.stderr)
    print(f"rows written to {Path(args.out) / summary.run}, no model run", file=sys.stderr)
    return 0


def _read_site_profile(path: Path) -> bytes:
    from core.serving.site import SiteProfileError

    try:
        return path.read_bytes()
    except OSError as exc:
        raise SiteProfileError(f"no site profile at {path} ({exc.strerror or exc})") from None


def cmd_pseudonyms(args) -> int:
    """The pseudonym of every file of SRC, beside its path: the join back, for the key's holder only."""
    import csv

    from core.serving.archive import RowKeys, list_sources
    from core.serving.archive.listing import load_key

    keys = RowKeys(Path(args.src).resolve(), "pseudonym", load_key(Path(args.key_file)))  # never a new key
    writer = csv.writer(sys.stdout)
    writer.writerow(["pseudonym", "path"])
    for source in list_sources(Path(args.src), Path(args.manifest) if args.manifest else None).sources:
        writer.writerow([keys(source), keys.relative(source)])
    return 0


def cmd_screen(args) -> int:
    from core.serving import screening
    from core.serving.heatmap import overlay, to_png

    if args.rethreshold:
        return cmd_rethreshold(args)
    if args.out:
        return cmd_screen_archive(args)
    if not args.paths:
        raise JobError("give the files or folders to screen")
    if args.format == "parquet":
        raise SystemExit("--format parquet writes part files: give --out DIR")

    predictor = _predictor(args.model, args.site)
    rows = screening.screen_paths(predictor, args.paths, args.operating_point, heatmaps=bool(args.heatmaps))
    if args.heatmaps:
        folder = Path(args.heatmaps)
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            if row.status == "ok":
                image = overlay(row.result.image, row.result.heatmap, frame=row.result.frame)
                (folder / f"{Path(row.file).stem}.png").write_bytes(to_png(image))
    print(screening.rows_to_json(rows) if args.format == "json" else screening.rows_to_csv(rows), end="")
    return 0 if all(row.status == "ok" for row in rows) else 1


def cmd_export(args) -> int:
    from core.learning import keras_model
    from core.learning.export import export

    for name in _model_names(args.model):
        model, card = keras_model.load(name)
        card = export(model, card)
        print(f"{name}: {card.onnx['file']} ({card.onnx['file_bytes'] / 1e6:.1f} MB), "
              f"heat map: {card.onnx['heatmap'] or 'from the Keras model (Grad-CAM or occlusion)'}")
    return 0


def cmd_calibrate_site(args) -> int:
    import json

    from core.analysis import site_calibration
    from core.serving.predictor import Predictor

    if args.diagnoses and not args.from_results:
        raise JobError("--diagnoses goes with --from-results: the results whose rows it labels")
    if args.from_results:
        try:
            rows = site_calibration.read_results(args.from_results, args.diagnoses)
        except ValueError as exc:
            raise JobError(str(exc)) from None
        # The model the rows were screened with, unless one is named: the guards refuse the others' rows.
        predictor = Predictor.load(args.model or site_calibration.results_model(rows))
        local = site_calibration.from_results(predictor, rows)
    else:
        predictor = Predictor.load(args.model)
        with _bar(None, "scoring local X-rays") as bar:
            def progress(done, total):
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                images = site_calibration.read_folder(args.data)
            except FileNotFoundError as exc:
                raise JobError(str(exc)) from None
            local = site_calibration.score(predictor, images, progress)
    for name, reason in local.refused:
        print(f"not used: {name}: {reason}", file=sys.stderr)
    try:
        content, advice = site_calibration.calibrate(predictor, local, args.sensitivity,
                                                     args.site_name or Path(args.out).stem)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    print(site_calibration.table(content))
    for line in advice:
        print(f"note: {line}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(content, indent=1) + "\n")
    print(f"site profile written to {args.out}")
    return 0


def cmd_bench(args) -> int:
    import json

    from core.analysis import bench
    from core.learning.pipeline import hardware
    from core.serving import registry

    rows = bench.run(args.model and [args.model], runs=args.runs)
    result = {"hardware": hardware(), "rows": rows}
    if args.save:
        registry.save_shared(registry.BENCHMARK, result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    width = max([len(r["model"]) for r in rows] + [5]) + 2
    print(f"{'model':<{width}}{'runtime':<8}{'params':>10}{'MB':>7}{'p50 ms':>8}{'p95 ms':>8}{'img/s':>8}"
          f"{'heat map ms':>12}{'vs keras':>10}")
    for r in rows:
        ratio = f"{r['vs_keras']:.1f}x" if r["vs_keras"] else "-"
        print(f"{r['model']:<{width}}{r['runtime']:<8}{r['parameters']:>10,}{r['file_mb']:>7.1f}{r['p50_ms']:>8.1f}"
              f"{r['p95_ms']:>8.1f}{r['throughput_per_s']:>8.0f}{r['explain_ms']:>12.1f}{ratio:>10}")
    return 0


def cmd_download(args) -> int:
    from core.learning.download import DEFAULT_BASE_URL, DownloadError, download

    bars = {}

    def progress(done, total, label):
        bar = bars.get(label) or bars.setdefault(label, _bar(total if total > 0 else None, label))
        bar.n = done
        bar.refresh()

    try:
        summary = download(args.dest, args.base_url or DEFAULT_BASE_URL, args.splits, progress)
    except DownloadError as exc:
        print(f"download failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for bar in bars.values():
            bar.close()
    for split, counts in summary.counts.items():
        print(f"{split}: " + ", ".join(f"{n} {c}" for c, n in counts.items()))
    print(f"written to {Path(args.dest) / 'chest_xray'}" + (f"; {summary.skipped} records skipped" if summary.skipped else ""))
    return 0


def cmd_explain(args) -> int:
    import json

    from core.analysis import reports
    from core.serving import registry
    from core.serving.predictor import Predictor

    data_dir = _data_dir(args.data)
    predictor = Predictor.load(args.model)
    with _bar(None, "reading images") as bar:
        scored = reports.score_split(predictor, data_dir, args.split, progress=bar)
    report = reports.lung_focus(predictor, scored, args.limit)
    print(f"lung focus of {report['model']} ({report['method']}) on {args.split}; thorax box covers "
          f"{report['thorax_area_share']:.0%} of the image")
    for name, shares in report["classes"].items():
        if shares["images"]:
            print(f"  {name:<10} inside {shares['inside']:.1%}  outside {shares['outside']:.1%}  "
                  f"top band {shares['top_band']:.1%}  ({shares['images']} images, "
                  f"{shares['blank_maps']} more with a blank map)")
        else:
            print(f"  {name:<10} all {shares['blank_maps']} heat maps blank (no evidence of pneumonia found)")
    if args.save_to_card:
        registry.update_card(predictor.name, "lung_focus", {"split": args.split, **report})
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def cmd_calibrate(args) -> int:
    from core.analysis import reports
    from core.serving import registry
    from core.serving.predictor import Predictor

    for name in _model_names(args.model):
        if args.test_time_zooms:
            registry.update_card(name, "test_time_zooms", list(args.test_time_zooms))
        with _bar(None, f"calibrating {name}") as bar:
            card = reports.recalibrate(Predictor.load(name), _data_dir(args.data), progress=bar)
        v = card.validation
        print(f"{name}: test-time zooms {card.test_time_zooms}, calibration {card.calibration}, "
              f"operating points {card.operating_points}; "
              f"validation AUC {v['auc']:.4f}, accuracy {v['accuracy']:.4f}, ECE {v['ece']:.4f}")
    return 0


def cmd_fit_detector(args) -> int:
    from core.learning.detector import fit_detector

    with _bar(None, "reading images") as bar:
        detector, refused = fit_detector(_data_dir(args.data), args.seed, progress=bar)
    print(f"thresholds: layout {detector.layout_threshold:.4f}, grey levels {detector.profile_threshold:.1f}; "
          f"held-out X-rays refused: {refused['as framed']:.2%} as framed, {refused['lung-field views']:.2%} "
          f"as lung-field views ({refused['images']} images each)")
    return 0


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="data folder in Kaggle layout (default: $CXR_DATA_DIR or ../shared/data)")


def _one_line_help(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=40, width=140)


class OneLineParser(argparse.ArgumentParser):
    """A usage error in one line, with where to read more, not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a zoo architecture and write its model and card")
    train.add_argument("--arch", help="architecture (see core/learning/zoo.py); or give --config")
    train.add_argument("--config", help="a JSON configuration, such as the best one `core tune` writes")
    _add_data(train)
    train.add_argument("--name", help="model name (default: the architecture's)")
    train.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    train.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    train.add_argument("--lr", type=_learning_rate, help="initial learning rate, or 'auto' for the finder's suggestion")
    train.add_argument("--size", type=int, help="input size in pixels")
    train.add_argument("--seed", type=int, default=42, help="patient-split seed (and training seed)")
    train.add_argument("--init-seed", type=int, help="another initialisation and batch order on the same split")
    train.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override a recipe field (docs/cli.md lists them), e.g. --set mixup=0.2")
    train.add_argument("--ensemble", type=int, default=1, metavar="N",
                       help="train N members from different initialisations and save them as one ensemble "
                       "(their logit average, as `ensemble` writes, without calibrating each member first)")
    train.add_argument("--frame", type=float, nargs="?", const=STANDARD_SIDE, metavar="SIDE",
                       help=f"cut every image to the localiser's standard frame (default side {STANDARD_SIDE})")
    train.add_argument("--equalise", action="store_true",
                       help="histogram-equalise every image first, at training and at screening")
    train.add_argument("--deterministic", action="store_true",
                       help="deterministic ops: the same command writes the same weights again")
    train.add_argument("--weights", default="none",
                       help="'none' (from scratch); a trained model's .keras file beside its card, of the "
                       "same architecture and preprocessing, to fine-tune (the new card names it and its "
                       "sha256; one network, under another --name, without --ensemble, --lr auto or "
                       "pre-training); or for the backbone 'imagenet' or its own .weights.h5 file")
    train.add_argument("--max-train-images", type=int, help="subsample the training split (quick runs)")
    train.add_argument("--models-dir", help="where to write the model (default: models/)")
    train.set_defaults(run=cmd_train)

    ensemble = commands.add_parser("ensemble", help="the logit average of trained files, calibrated under shift")
    ensemble.add_argument("--member", action="append", default=[], metavar="NAME[@DIR]", required=True,
                          help="a trained model (in DIR, default models/); repeat for each member")
    ensemble.add_argument("--name", required=True, help="the ensemble's model name")
    _add_data(ensemble)
    ensemble.add_argument("--models-dir", help="where to write the ensemble (default: models/)")
    ensemble.set_defaults(run=cmd_ensemble)

    localiser = commands.add_parser("train-localiser", help="train the framing localiser that `train --frame` uses "
                                    "(self-supervised, on the training split)")
    _add_data(localiser)
    localiser.add_argument("--epochs", type=int, help="default: EPOCHS in core/learning/framing.py")
    localiser.add_argument("--seed", type=int, default=42, help="patient-split seed")
    localiser.add_argument("--max-train-images", type=int, help="subsample the training split (quick runs)")
    localiser.set_defaults(run=cmd_train_localiser)

    evaluate = commands.add_parser("evaluate", help="metrics of models on a data set split")
    _add_data(evaluate)
    evaluate.add_argument("--split", default="test", help="a folder split, or 'validation': the patient-level "
                          "hold-out of train that training used")
    evaluate.add_argument("--model", help="a model name, 'all', or the default model when left out")
    evaluate.add_argument("--json", help="write the records as a JSON list to this file")
    evaluate.add_argument("--site", metavar="SITE.json", help="evaluate at this site profile's operating points "
                          "and calibration (its model unless --model is given)")
    evaluate.add_argument("--top-losses", type=int, default=0, metavar="N", help="list the N worst images")
    evaluate.add_argument("--save-report", action="store_true",
                          help="store the record, predictions included, as models/NAME.SPLIT.json")
    evaluate.set_defaults(run=cmd_evaluate)

    record = commands.add_parser("record-check", help="add `evaluate --json` records to models/external_checks.json")
    record.add_argument("file", help="the JSON list that `evaluate --json` wrote")
    record.add_argument("--date", help="the day of the check (default: today)")
    record.add_argument("--data-note", help="what the images were (default: the split and its counts)")
    record.add_argument("--by", help="who or what ran it (default: the evaluate command)")
    record.set_defaults(run=cmd_record_check)

    screen = commands.add_parser(
        "screen", help="screen image files or folders; with --out, an archive job",
        description="One row per file. Without --out, rows go to stdout; exit code 0 when every file was "
                    "screened, 1 when any was refused (the others are still screened), 2 for usage errors. "
                    "With --out DIR, a batched, resumable job writes part files under DIR; exit code 0 when "
                    "the job finished, whatever its files held, and non-zero for a fault of the job itself.")
    screen.add_argument("paths", nargs="*", metavar="PATH", help="files or folders; with --out, one folder SRC")
    screen.add_argument("--model", help="model name (default: the manifest's default)")
    screen.add_argument("--operating-point", default=DEFAULT_OPERATING_POINT, choices=OPERATING_POINTS,
                        help="the threshold each label is given at")
    screen.add_argument("--site", metavar="SITE.json", help="use this site profile's operating points and calibration")
    screen.add_argument("--format", choices=("csv", "json", "parquet"),
                        help="stdout: csv (default) or json; with --out: parquet (default) or csv")
    screen.add_argument("--heatmaps", metavar="DIR", help="write one heat-map overlay PNG per screened image")
    screen.add_argument("--out", metavar="DIR", help="an archive job: one row per file of SRC in part files here")
    screen.add_argument("--resume", action="store_true", help="with --out: screen only the files DIR does not hold")
    screen.add_argument("--manifest", metavar="FILE", help="with --out: the files to screen, one path a line "
                                                          "(relative to SRC or absolute), instead of walking SRC")
    screen.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="with --out: this machine's cores, or a Ray cluster (pip install -r requirements-scale.txt)")
    screen.add_argument("--address", help="with --engine ray: an existing cluster (default: a local instance)")
    screen.add_argument("--workers", type=_positive, help="decoding threads (local; default: the cores less a quarter "
                        "for the forward pass) or Ray actors (default: one per core)")
    screen.add_argument("--batch-size", type=_positive, default=32, help="images per forward pass")
    screen.add_argument("--path-column", choices=("relative", "as-given", "pseudonym"), default="relative",
                        help="with --out: each row's path relative to SRC, as given, or a keyed pseudonym")
    screen.add_argument("--key-file", metavar="KEY", help="with --path-column pseudonym: the key (made when "
                        "absent); keep it to join results back (`core pseudonyms`)")
    screen.add_argument("--rethreshold", metavar="DIR", help="an archive job's rows (its --out DIR) at the --site "
                        "profile's points, from their stored raw outputs, written to --out NEW: no model is run")
    screen.set_defaults(run=cmd_screen)

    pseudonyms = commands.add_parser("pseudonyms", help="each file's pseudonym beside its path (CSV), "
                                     "to join back an archive job's rows")
    pseudonyms.add_argument("src", metavar="SRC", help="the job's source folder")
    pseudonyms.add_argument("--key-file", required=True, metavar="KEY", help="the job's pseudonym key")
    pseudonyms.add_argument("--manifest", metavar="FILE", help="the job's manifest, if it had one")
    pseudonyms.set_defaults(run=cmd_pseudonyms)

    bench = commands.add_parser("bench", help="latency, throughput and explanation cost per model")
    bench.add_argument("--model", help="one model (default: all)")
    bench.add_argument("--runs", type=int, default=50, help="timed screenings per model and runtime")
    bench.add_argument("--save", action="store_true", help="store the numbers in models/bench.json for the dashboard")
    bench.add_argument("--json", metavar="OUT", help="write the rows to this JSON file")
    bench.set_defaults(run=cmd_bench)

    download = commands.add_parser("download", help="fetch the public chest X-ray set (Kaggle layout)")
    download.add_argument("--dest", required=True, help="folder to write chest_xray/{train,test}/... into")
    download.add_argument("--base-url", default=None, help="mirror of the TFRecords (default: TensorFlow's storage)")
    download.add_argument("--splits", nargs="+", default=["train", "test"], help="the splits to fetch")
    download.set_defaults(run=cmd_download)

    lr_find = commands.add_parser("lr-find", help="learning-rate range test with a suggested rate")
    lr_find.add_argument("--arch", required=True, help="architecture (see core/learning/zoo.py)")
    _add_data(lr_find)
    lr_find.add_argument("--size", type=int, help="input size in pixels (default: the architecture's)")
    lr_find.add_argument("--steps", type=int, default=150, help="steps of exponentially growing rate")
    lr_find.add_argument("--seed", type=int, default=42, help="patient-split seed")
    lr_find.add_argument("--max-train-images", type=int, help="subsample the training split (quick runs)")
    lr_find.add_argument("--plot", help="write the loss-against-rate plot to this HTML file")
    lr_find.add_argument("--json", help="write the curve and suggestion to this file")
    lr_find.set_defaults(run=cmd_lr_find)

    tune = commands.add_parser("tune", help="hyper-parameter search (keras-tuner) on validation AUC")
    tune.add_argument("--arch", required=True, help="architecture (see core/learning/zoo.py)")
    _add_data(tune)
    tune.add_argument("--trials", type=int, default=10, help="configurations to try")
    tune.add_argument("--max-minutes", type=float, help="stop starting new trials after this long")
    tune.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    tune.add_argument("--dir", default="tuning", help="search state and results; run again to resume")
    tune.add_argument("--max-train-images", type=int, help="subsample the training split (quick searches)")
    tune.set_defaults(run=cmd_tune)

    calibrate = commands.add_parser("calibrate", help="refit calibration and operating points on validation")
    _add_data(calibrate)
    calibrate.add_argument("--model", help="a model name, 'all', or the default model when left out")
    calibrate.add_argument("--test-time-zooms", type=_numbers, metavar="Z1,Z2,...",
                           help="average over these framings from now on (core/serving/tta.py), e.g. 1,1.12,0.9")
    calibrate.set_defaults(run=cmd_calibrate)

    export = commands.add_parser("export", help="write the ONNX serving file of trained models")
    export.add_argument("--model", help="a model name, 'all', or the default model when left out")
    export.set_defaults(run=cmd_export)

    site = commands.add_parser("calibrate-site", help="a clinic's own operating points from its labelled X-rays")
    labelled = site.add_mutually_exclusive_group(required=True)
    labelled.add_argument("--data", help="a folder with NORMAL/ and PNEUMONIA/ folders of local X-rays")
    labelled.add_argument("--from-results", metavar="FILE|DIR",
                          help="screening results with the clinic's diagnoses filled in: the Screen page's CSV, "
                               "`core screen`'s CSV or JSON, or an archive job's --out folder")
    site.add_argument("--diagnoses", metavar="FILE", help="with --from-results: the diagnoses in a file of their own "
                      "(CSV or JSON: diagnosis, optional patient, and image_sha256 or the rows' path), as for an "
                      "archive job's folder, whose rows' diagnosis column stays empty")
    site.add_argument("--model", help="model name (default: the manifest's default)")
    site.add_argument("--sensitivity", type=float, default=0.98, help="sensitivity target of the screening point")
    site.add_argument("--out", required=True, metavar="SITE.json", help="where to write the site profile")
    site.add_argument("--site-name", help="the site's name in the profile (default: the file's name)")
    site.set_defaults(run=cmd_calibrate_site)

    detector = commands.add_parser("fit-detector", help="fit the not-a-chest-X-ray check on real X-rays")
    _add_data(detector)
    detector.add_argument("--seed", type=int, default=42, help="patient split seed (as in training)")
    detector.set_defaults(run=cmd_fit_detector)

    explain = commands.add_parser("explain", help="lung-focus report: where the heat maps fall, per class")
    _add_data(explain)
    explain.add_argument("--split", default="validation", help="a folder split, or 'validation' (the default): "
                         "the patient-level hold-out of train")
    explain.add_argument("--model", help="model name (default: the manifest's default)")
    explain.add_argument("--limit", type=int, default=200, help="images per report (an even sample)")
    explain.add_argument("--json", help="write the report to this file")
    explain.add_argument("--save-to-card", action="store_true", help="store it beside the model card")
    explain.set_defaults(run=cmd_explain)
    for command in commands.choices.values():  # one line per option in --help
        command.formatter_class = _one_line_help
    return parser


# Commands whose work is in Keras: they load TensorFlow before running.
TENSORFLOW_COMMANDS = {"train", "ensemble", "evaluate", "bench", "lr-find", "tune", "calibrate", "export"}


def _import_tensorflow_quietly() -> None:
    """TensorFlow writes its oneDNN and absl notices to the process's stderr while it is imported,
    before any log setting can apply; they are dropped there. An import error still raises, after
    stderr is restored, so its traceback is seen."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


# An operator's mistake found inside a command: one line naming it, never a traceback.
OPERATOR_ERRORS = (JobError, SiteProfileError, FileNotFoundError, NotADirectoryError, PermissionError)
DEBUG_ENV = "CXR_DEBUG"  # set to 1 for the traceback of an unexpected failure
CRASHED = 70  # sysexits' EX_SOFTWARE: apart from screen's 1 (some files refused) and usage errors' 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in TENSORFLOW_COMMANDS:
            _import_tensorflow_quietly()
        return args.run(args)
    except OPERATOR_ERRORS as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last word for a user: what failed, in one line, and how to see more
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{args.command}: failed ({type(exc).__name__}: {exc}); set {DEBUG_ENV}=1 to see where",
              file=sys.stderr)
        return CRASHED


if __name__ == "__main__":
    sys.exit(main())
