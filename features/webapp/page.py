"""The web app's page: three views over a :class:`~.workbench.Workbench` (Try it, Mistakes, Review), laid out in
Gradio. Every handler catches what the toolkit raises and says it in the page: a photo that cannot be read, a run
that cannot be loaded, a damaged corrections file are a line of text, never a traceback, and the app keeps serving.
"""

# No `from __future__ import annotations`: Gradio reads the handlers' `gr.SelectData` annotations as types.
from .workbench import KINDS, Workbench, problem_text, select

TITLE = "Transfer learning: try it, see its mistakes, review the photos"
HEADERS = ["kind", "id", "class", "suggestion", "decision"]


def build_page(bench: Workbench):
    """The app's ``gr.Blocks`` (``.launch()`` serves it; in a notebook it shows inline)."""
    import gradio as gr

    choices = [(e.label, str(e.path)) for e in bench.runs.values()]
    first = choices[0][1] if choices else None

    def try_it(run, photo):
        # preprocess=False: the upload's file as it came (FileData), read by the toolkit's guarded decoder (a
        # decompression bomb, a 16-bit PNG, a file that is no image get its messages), never by PIL in Gradio
        name = photo.get("orig_name") if isinstance(photo, dict) else None
        photo = photo.get("path") if isinstance(photo, dict) else photo
        if not photo:
            return None, None, ""
        try:
            tried = bench.try_photo(run, photo, name=name)
        except Exception as exc:  # noqa: BLE001 - said in the page; the app keeps serving
            return None, None, f"**Cannot answer:** {problem_text(exc)}"
        heat = f"heatmap: {tried.why_no_heatmap}" if tried.heatmap is None else ""
        return tried.top, (str(tried.heatmap) if tried.heatmap else None), (
            f"answered by {tried.answered} in {tried.seconds:.2f} s. {heat}")

    def examples(run):
        try:
            return bench.examples(run) if run else []
        except Exception as exc:  # noqa: BLE001
            gr.Warning(problem_text(exc))
            return []

    def pick_example(run, evt: gr.SelectData):
        shown = examples(run)
        return shown[evt.index] if 0 <= evt.index < len(shown) else None

    def mistakes(run):
        try:
            names, counts = bench.confusion(run)
            import pandas as pd

            table = pd.DataFrame([[names[i], *counts[i].tolist()] for i in range(len(names))],
                                 columns=["true \\ predicted", *names])
            return table, bench.mistakes(run), ""
        except Exception as exc:  # noqa: BLE001
            return None, [], f"**Cannot show the mistakes:** {problem_text(exc)}"

    def cell(run, evt: gr.SelectData):
        try:
            names, _ = bench.confusion(run)
            row, col = evt.index
            if col == 0:
                return gr.update(), "choose a cell of counts, not the class name"
            true, predicted = names[row], names[col - 1]
            shown = bench.mistakes(run, true=true, predicted=predicted)
            return shown, f"{len(shown)} test photo(s) of {true} taken for {predicted}"
        except Exception as exc:  # noqa: BLE001
            return [], f"**Cannot show that cell:** {problem_text(exc)}"

    def review(run, kind, label):
        try:
            summary = bench.find_audit(run)
            if summary is None:
                return [], ("No audit of this run's photos yet: **Run the audit** finds copies, leaks, likely "
                            "label errors and outliers."), "", gr.update(choices=["all"])
            everything = bench.findings(summary)  # the audit and the decisions read once
            rows = select(everything, kind=kind, label=label)
            listed = {r["id"] for r in everything}
            done = len({r["id"] for r in everything if r["decision"]})
            classes = sorted({r["class"] for r in everything if r["class"]})
            status = (f"{done} of {len(listed)} photos reviewed, {len(listed) - done} remain ({len(everything)} "
                      f"findings in the audit of {summary.get('photos')} photos; decisions in {bench.corrections}).")
            return ([[r[h] for h in HEADERS] for r in rows], status, "Apply them: `" + bench.command(run) + "`",
                    gr.update(choices=["all", *classes]))
        except Exception as exc:  # noqa: BLE001
            return [], f"**Cannot show the review:** {problem_text(exc)}", "", gr.update()

    progress_bar = gr.Progress()  # Gradio's way: a handler's default argument it fills in

    def _run_audit(run, kind, label, progress=progress_bar):  # Gradio passes the inputs by position
        try:
            bench.run_audit(run, progress=progress)
        except Exception as exc:  # noqa: BLE001
            return [], f"**The audit stopped:** {problem_text(exc)}", "", gr.update()
        return review(run, kind, label)

    def select_finding(run, table, evt: gr.SelectData):
        try:
            row = table.values.tolist()[evt.index[0]] if hasattr(table, "values") else table[evt.index[0]]
            kind, photo_id = row[0], row[1]
            found = next(r for r in bench.findings(bench.find_audit(run)) if (r["kind"], r["id"]) == (kind, photo_id))
            root = bench.photo_root(run)
            from ..data.photo_ids import photo_path

            other = found.get("other")
            return (photo_id, str(photo_path(root, photo_id)), str(photo_path(root, other)) if other else None,
                    gr.update(value=found.get("suggested")))
        except Exception:  # noqa: BLE001 - nothing chosen; the table stays as it is
            return "", None, None, gr.update()

    def decide(decision):
        def _handler(run, photo_id, relabel_as, kind, label):  # Gradio passes the inputs by position
            if not photo_id:
                return (*review(run, kind, label)[:3], "choose a photo in the table first")
            try:
                made = bench.decide(run, photo_id, decision, label=relabel_as)
            except Exception as exc:  # noqa: BLE001
                return (*review(run, kind, label)[:3], f"**Not saved:** {problem_text(exc)}")
            table, status, command, _ = review(run, kind, label)
            said = f"{made.decision} {photo_id}" + (f" as {made.label}" if made.label else "") + ": saved"
            return table, status, command, said
        return _handler

    with gr.Blocks(title=TITLE, analytics_enabled=False) as page:
        gr.Markdown(f"# {TITLE}")
        if not choices:
            gr.Markdown("**No run folder found.** Train one (`python classify.py`, `python finetune.py`) and "
                        "start the app again, or give run folders: `python app.py runs/...`.")
        run = gr.Dropdown(choices=choices, value=first, label="Run", elem_id="run")
        with gr.Tab("Try it", id="try"):
            with gr.Row():
                photo = gr.Image(type="filepath", image_mode=None, label="Photo: drop, upload or paste one",
                                 sources=["upload", "clipboard"], elem_id="photo")
                with gr.Column():
                    top = gr.Label(num_top_classes=5, label="Top classes", elem_id="top")
                    heatmap = gr.Image(label="Where the network looked", interactive=False, elem_id="heatmap")
                    info = gr.Markdown(elem_id="info")
            shown = gr.Gallery(label="Or choose one of the run's test photos", columns=6, height=160,
                               allow_preview=False, elem_id="examples")
            photo.change(try_it, [run, photo], [top, heatmap, info], api_name="try_photo", preprocess=False)
            shown.select(pick_example, [run], [photo], api_visibility="undocumented")
        with gr.Tab("Mistakes", id="mistakes"):
            show = gr.Button("Show the mistakes", elem_id="show-mistakes")
            note = gr.Markdown(elem_id="mistakes-note")
            matrix = gr.Dataframe(label="Confusion matrix (rows: true class; choose a cell to see its photos)",
                                  interactive=False, elem_id="confusion")
            wrong = gr.Gallery(label="Wrong test photos, highest loss first (the first with their heatmaps)",
                               columns=4, object_fit="contain", elem_id="wrong")
            show.click(mistakes, [run], [matrix, wrong, note], api_name="mistakes")
            matrix.select(cell, [run], [wrong, note], api_visibility="undocumented")
        with gr.Tab("Review", id="review"):
            status = gr.Markdown(elem_id="review-status")
            audit_button = gr.Button("Run the audit", elem_id="run-audit")
            with gr.Row():
                kind = gr.Dropdown(["all", *KINDS], value="all", label="Kind", elem_id="kind")
                label = gr.Dropdown(["all"], value="all", label="Class", elem_id="class")
            table = gr.Dataframe(headers=HEADERS, interactive=False, label="To review (choose a row)",
                                 elem_id="findings")
            with gr.Row():
                chosen = gr.Textbox(label="Photo", interactive=False, elem_id="chosen")
                relabel_as = gr.Dropdown(_class_choices(bench, first), label="Relabel as", elem_id="relabel-as")
            with gr.Row():
                picture = gr.Image(label="The photo", interactive=False, height=320, elem_id="picture")
                copy = gr.Image(label="Its copy (near copies, the same file)", interactive=False, height=320,
                                elem_id="copy")
            with gr.Row():
                keep = gr.Button("Keep", elem_id="keep")
                relabel = gr.Button("Relabel as", elem_id="relabel")
                remove = gr.Button("Remove", elem_id="remove")
            said = gr.Markdown(elem_id="said")
            command = gr.Markdown(elem_id="command")
            review_outputs = [table, status, command, label]
            audit_button.click(_run_audit, [run, kind, label], review_outputs, api_name="run_audit")
            kind.change(review, [run, kind, label], review_outputs, api_visibility="undocumented")
            label.change(review, [run, kind, label], review_outputs, api_visibility="undocumented")
            table.select(select_finding, [run, table], [chosen, picture, copy, relabel_as],
                         api_visibility="undocumented")
            for button, decision in ((keep, "keep"), (relabel, "relabel"), (remove, "remove")):
                button.click(decide(decision), [run, chosen, relabel_as, kind, label],
                             [table, status, command, said], api_name=f"decide_{decision}")
        page.load(review, [run, kind, label], review_outputs, api_name="review")
        page.load(examples, [run], [shown], api_visibility="undocumented")
        run.change(review, [run, kind, label], review_outputs, api_visibility="undocumented")
        run.change(examples, [run], [shown], api_visibility="undocumented")
    return page


def _class_choices(bench: Workbench, run) -> list[str]:
    if run is None:
        return []
    try:
        names, _ = bench.confusion(run)
        return names
    except Exception:  # noqa: BLE001 - no classes to offer; the views say why
        return []
