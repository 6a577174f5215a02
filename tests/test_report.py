"""`fusionlab report`: one self-contained HTML page of a study, parsed with html.parser and
(slow) rendered in a headless Chromium.

Results are written by hand (test_table's StudyWriter, after docs/results-format.md);
expected numbers are computed here from the accuracies written, never read from the code.
"""

from __future__ import annotations

import base64
import json
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_table import BASE, CN, CONV, HL, HLLH, StudyWriter, build_results, pm

from fusion_lab.analysis.report import build_report, write_report
from fusion_lab.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
VOID = {"br", "img", "meta", "hr", "input", "link", "col", "wbr"}


# --- a small DOM from html.parser ------------------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict, parent: Node | None = None):
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if isinstance(c, Node):
                out += ([c] if tag is None or c.tag == tag else []) + c.all(tag)
        return out

    def by_id(self, ident: str) -> Node | None:
        return next((n for n in self.all() if n.attrs.get("id") == ident), None)


class Tree(HTMLParser):
    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {})
        self.feed(text)
        self.close()
        assert self.cur is self.root, f"unclosed <{self.cur.tag}>"

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs), self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_endtag(self, tag):
        assert self.cur.tag == tag, f"</{tag}> closes <{self.cur.tag}>"
        self.cur = self.cur.parent

    def handle_data(self, data):
        self.cur.children.append(data)


def table_rows(node: Node) -> list[list[str]]:
    """The rows of the first table under ``node``: header row first, cell texts."""
    table = node.all("table")[0]
    return [[c.text().strip() for c in tr.all() if c.tag in ("td", "th")]
            for tr in table.all("tr")]


def row_of(rows: list[list[str]], first: str) -> dict[str, str]:
    hits = [r for r in rows[1:] if r[0] == first]
    assert len(hits) == 1, (first, rows)
    return dict(zip(rows[0], hits[0]))


# --- results written by hand --------------------------------------------------------------

def write_metrics(study_dir: Path, epochs: int = 3) -> None:
    """metrics.jsonl of every finished run: accuracy rising linearly to its final value."""
    for d in study_dir.iterdir():
        s = json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
        if s.get("status") == "done":
            lines = [{"epoch": e, "train_loss": 2.0 / e, "test_acc": s["final"]["acc"] * e / epochs}
                     for e in range(1, epochs + 1)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """"ablation": complete, partial, failed, running and pending rows; "grid": complete."""
    res = build_results(tmp_path / "results")
    for study in ("ablation", "grid"):
        write_metrics(res / study)
    return res


def page(results: Path, study: str, **kw) -> tuple[str, Node]:
    html = build_report(results / study, **kw).html
    return html, Tree(html).root


def run_dir(results: Path, study: str, label: str, seed: int = 0, grid: str | None = None) -> Path:
    for d in (results / study).iterdir():
        cfg = json.loads((d / "config.json").read_text()) if (d / "config.json").is_file() else {}
        if cfg.get("label") == label and cfg.get("seed") == seed and (
                grid is None or grid in cfg["grid"].values()):
            return d
    raise AssertionError(f"no run {label} seed {seed}")


# --- the page ----------------------------------------------------------------------------

def test_table_holds_every_row_its_delta_interval_and_notes(results):
    _, root = page(results, "ablation", figures=False)
    table = root.by_id("table")
    rows = table_rows(table)
    assert "95% CI of Δ" in rows[0] and "Δ vs Baseline" in rows[0]
    b = statistics.mean(BASE)
    hl = row_of(rows, "HL")
    assert hl["Acc"] == pm(HL) and hl["n"] == "3"
    assert hl["Δ vs Baseline"] == f"{statistics.mean(HL) - b:+.2f}"
    assert hl["95% CI of Δ"].endswith("welch")
    assert row_of(rows, "HL+LH")["Δ vs Baseline"] == f"{statistics.mean(HLLH) - b:+.2f} ≈"
    cn = row_of(rows, "CN-CNN")
    assert cn["Acc"] == f"{CN:.2f}" and cn["n"] == "1/3 †" and cn["paper"] == "87.3"
    assert row_of(rows, "w/ ConvLSTM")["Δ vs Baseline"] == f"{CONV - b:+.2f}"
    notes = table.all("ul")[0].text()
    assert "ddof=1" in notes and "within noise" in notes and "RuntimeError: CUDA OOM" in notes


def test_images_are_inline_pngs_and_nothing_is_fetched(results):
    html, root = page(results, "ablation")
    images = root.all("img")
    assert len(images) == 1 and root.by_id("plot").all("img") == images  # the curves and Δs
    for img in images:
        prefix = "data:image/png;base64,"
        assert img.attrs["src"].startswith(prefix)
        assert base64.b64decode(img.attrs["src"][len(prefix):]).startswith(PNG)
    for node in root.all():
        assert node.tag not in ("script", "link", "iframe", "object", "embed")
        for value in node.attrs.values():
            assert "http:" not in (value or "") and "https:" not in (value or "")
    assert "http://" not in html and "https://" not in html and "url(" not in html


def test_banner_at_the_top_names_the_runs_not_done(results):
    html, root = page(results, "ablation", figures=False)
    banner = root.by_id("not-done")
    text = banner.text()
    # ablation: CN-CNN seed 1 failed, seed 2 running; w/ ConvLSTM seeds 1 and 2 pending
    assert "4 of 16 run(s) not done (1 failed, 2 pending, 1 running)" in text
    failed = run_dir(results, "ablation", "CN-CNN", seed=1).name
    assert f"failed: CN-CNN, seed 1, run {failed[:12]}: RuntimeError: CUDA OOM" in text
    assert "partial row: CN-CNN: 1/3 seeds finished" in text and "nan" not in text
    assert html.index('id="not-done"') < html.index('id="table"')


def test_a_complete_study_has_no_banner(results):
    html, root = page(results, "grid", figures=False)
    assert root.by_id("not-done") is None and 'class="banner' not in html
    assert len(table_rows(root.by_id("table"))) == 5  # header + 2 rows x 2 backbones


def test_user_strings_are_escaped(tmp_path):
    w = StudyWriter(tmp_path, "esc<i>", seeds=[0, 1])
    w.study["describe"] = "<script>alert(1)</script> & co"
    w.row("Baseline", [("done", 80.0), ("done", 81.0)])
    w.row("<b>bold</b>", [("done", 82.0), ("failed", None, None, None,
                                           "ValueError: <img src=x onerror=alert(1)>")],
          fusion="b")
    w.save()
    html, root = page(tmp_path, "esc<i>", figures=False)
    assert not root.all("b") and not root.all("script") and not root.all("img")
    assert not root.all("i")
    text = root.text()
    assert "<script>alert(1)</script> & co" in root.all("h1")[0].text()
    assert "<b>bold</b>" in text and "ValueError: <img src=x onerror=alert(1)>" in text
    assert row_of(table_rows(root.by_id("table")), "<b>bold</b>")["n"] == "1/2 †"


def test_runs_show_status_provenance_and_config(results, tmp_path):
    plugin = tmp_path / "my_fusion.py"
    plugin.write_text("# changed since the run\n")
    d = run_dir(results, "ablation", "HL", seed=1)
    s = json.loads((d / "summary.json").read_text())
    s.update(git_commit="0123456789abcdef0123", git_dirty=True, device="cuda:0 (H100)",
             versions={"python": "3.11.7", "torch": "2.14.1", "fusion_lab": "0.1.0"},
             plugins={str(plugin): "f" * 64}, precision="bf16")
    (d / "summary.json").write_text(json.dumps(s))
    _, root = page(results, "ablation", figures=False)
    rows = table_rows(root.by_id("runs"))
    hl = row_of(rows, d.name[:12])
    assert hl["Status"] == "done" and hl["Acc (final)"] == f"{HL[1]:.2f}" and hl["Seed"] == "1"
    prov = hl["Provenance"]
    assert "git 0123456789ab (dirty" in prov and "torch 2.14.1" in prov and "bf16" in prov
    assert "plugin my_fusion.py sha256:ffffffffffff (changed on disk since)" in prov
    assert json.loads(hl["Config"].removeprefix("config"))["model"]["fusion"] == "hl"
    failed = row_of(rows, run_dir(results, "ablation", "CN-CNN", seed=1).name[:12])
    assert failed["Status"] == "failedRuntimeError: CUDA OOM"
    assert len(rows) == 1 + 16  # every run of the plan, and the edited study's leftover


def test_cost_profile_is_shown_when_measured(results):
    grid = results / "grid"
    plan = json.loads((grid / "study.json").read_text())["rows"]
    cost = {"device": "cpu (2 threads)", "measured": "2026-11-27T10:00:00+00:00",
            "image_size": 448, "batch_size": 4, "baseline": "Baseline",
            "rows": {r["group_id"]: {"params": 23_917_832 + i, "gflops": 32.7 + i,
                                     "train_ips": 10.0, "infer_ips": 30.0, "train_ratio": 1.0,
                                     "infer_ratio": 1.0 + i, "peak_mem_mb": 812.0}
                     for i, r in enumerate(plan)}}
    _, root = page(results, "grid", figures=False)
    assert root.by_id("cost") is None
    (grid / "cost.json").write_text(json.dumps(cost))
    _, root = page(results, "grid", figures=False)
    rows = table_rows(root.by_id("cost"))
    assert rows[0] == ["Row", "Params (M)", "GFLOPs", "train img/s", "infer img/s", "peak MB"]
    assert rows[2] == ["CN-CNN (resnet18)", "23.9", "33.70", "10 (×1.00)", "30 (×2.00)",
                       "812"]
    assert "cpu (2 threads)" in root.by_id("cost").text()


def scored(results: Path) -> Path:
    """grid's CN-CNN resnet50 seed 0 run, scored as `viz --score` writes it."""
    d = run_dir(results, "grid", "CN-CNN", seed=0, grid="resnet50")
    levels = {lv: {"point_box": 80.0 + i, "point_part": 40.0, "energy_box": 0.5,
                   "area_box": 0.25, "energy_part": 0.1, "area_part": 0.05}
              for i, lv in enumerate(("s5", "s4"))}
    (d / "attention_last.json").write_text(json.dumps(
        {"weights": "last", "epoch": 2, "images": 100, "limit": None, "levels": levels}))
    return d


def test_figure3_from_a_png_and_its_scores(results, tmp_path):
    d = scored(results)
    png = PNG + b"figure three"
    (tmp_path / "figure3.png").write_bytes(png)
    _, root = page(results, "grid", figure3_png=tmp_path / "figure3.png")
    section = root.by_id("figure3")
    [img] = section.all("img")
    assert img.attrs["src"] == "data:image/png;base64," + base64.b64encode(png).decode()
    rows = table_rows(section)
    assert row_of(rows, "s4")["point_box"] == "81.0" and row_of(rows, "s5")["area_box"] == "0.250"
    assert d.name[:12] in section.text()
    table = table_rows(root.by_id("table"))
    # one of its finished seeds was scored: the cell says so (issue 20)
    assert row_of(table, "CN-CNN (resnet50)")["point s5 %"] == "80.0 (n=1)"


def test_figure3_that_cannot_be_drawn_says_why(results):
    scored(results)  # scored, but no checkpoint.pt in the hand-written run
    report = build_report(results / "grid")
    section = Tree(report.html).root.by_id("figure3")
    assert "Figure 3 not drawn" in section.text() and "checkpoint.pt" in section.text()
    assert any("Figure 3 not drawn" in w for w in report.warnings)


def test_cli_writes_the_page_where_asked(results, tmp_path, capsys):
    main(["report", "ablation", "--results", str(results)])
    out = results / "ablation" / "report.html"
    assert capsys.readouterr().out.strip() == str(out) and out.read_text().startswith(
        "<!DOCTYPE html>")
    main(["report", str(results / "grid"), "--out", str(tmp_path / "g.html"), "--no-figures"])
    assert not Tree((tmp_path / "g.html").read_text()).root.all("img")
    for argv, says in ((["report", "nosuch"], "no results for study 'nosuch'"),
                       (["report", "grid", "--figure3", str(out)], "not a PNG"),
                       (["report", "grid", "--out", str(tmp_path / "no" / "r.html")],
                        "does not exist")):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--results", str(results)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_report_imports_no_torch(results, tmp_path):
    code = ("import sys; from fusion_lab.analysis.report import write_report; "
            f"write_report({str(results / 'ablation')!r}, {str(tmp_path / 'r.html')!r}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "r.html").is_file()


# --- rendered in a real browser ------------------------------------------------------------

def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it as root)")


@pytest.mark.slow
def test_the_page_renders_in_headless_chromium(results, tmp_path):
    from PIL import Image

    browser = chromium()
    out, _ = write_report(results / "ablation")
    args = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"]
    dom = subprocess.run([*args, "--dump-dom", out.resolve().as_uri()], capture_output=True,
                         text=True, timeout=120)
    root = Tree(dom.stdout).root
    assert "Incomplete study: 4 of 16 run(s) not done" in root.by_id("not-done").text()
    assert row_of(table_rows(root.by_id("table")), "HL")["Acc"] == pm(HL)
    shot = tmp_path / "shot.png"
    subprocess.run([*args, f"--screenshot={shot}", out.resolve().as_uri()],
                   capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1000)
    colours = img.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, tables and the plot: not a blank page
    # the banner's border colour (#b00020) is drawn near the top, above the fold
    top = img.crop((0, 0, 1280, 400)).getcolors(maxcolors=1 << 20)
    assert any(c == (0xb0, 0x00, 0x20) and n > 100 for n, c in top)


# --- a study trained for real (seconds) ----------------------------------------------------

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = f"""
name: tinyreport
describe: two rows of the tiny CNN
plugins: [{TINY}]
base:
  dataset:
    name: synthetic_fgvc
    options: {{num_classes: 3, train_per_class: 4, test_per_class: 3, image_size: 32}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8}}
  train: {{epochs: 1, batch_size: 6, image_size: 32, resize: 36, workers: 0,
           lr_backbone: 0.01, lr_new: 0.01}}
variants:
  - {{label: Baseline, model: {{preset: baseline}}}}
  - {{label: CN-CNN, model: {{preset: cn_cnn}}}}
seeds: [0]
baseline: Baseline
"""


@pytest.mark.slow
def test_a_trained_and_scored_study_draws_figure3_and_records_provenance(tmp_path,
                                                                         isolated_registries):
    from fusion_lab import store
    from fusion_lab.maps.viz_score import score_run
    from fusion_lab.orchestrate.runner import train_study
    from fusion_lab.plan.planning import prepare
    from fusion_lab.training.provenance import git_state

    (tmp_path / "tinyreport.yaml").write_text(STUDY)
    study, runs = prepare(tmp_path / "tinyreport.yaml")
    assert not train_study(study, runs, tmp_path / "results", device="cpu").failed
    cn = next(store.run_dir(tmp_path / "results", study.name, r.run_id) for r in runs
              if r.label == "CN-CNN")
    score_run(cn, limit=3)
    main(["report", str(tmp_path / "tinyreport.yaml"), "--results", str(tmp_path / "results")])
    root = Tree((tmp_path / "results" / "tinyreport" / "report.html").read_text()).root
    assert root.by_id("not-done") is None
    [figure] = root.by_id("figure3").all("img")
    assert base64.b64decode(figure.attrs["src"].split(",", 1)[1]).startswith(PNG)
    assert cn.name[:12] in root.by_id("figure3").text()
    runs_text = root.by_id("runs").text()
    commit, _ = git_state()
    assert (f"git {commit[:12]}" if commit else "git commit: not recorded") in runs_text
    assert f"plugin {TINY.name} sha256:" in runs_text and "torch " in runs_text
