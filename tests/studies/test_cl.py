"""The continual Med-VQA study: the adapter pool, per-sample routing in mixed batches, keys and pool on disk."""

import numpy as np
import pandas as pd
import pytest
import torch

from brainvlm.studies import cl
from brainvlm.studies.base import SettingsError, load_base, predict_samples
from brainvlm.train.checkpoints import TRAINABLE, load_tensors

ORDER = ["abdomen", "chest", "head"]
PARAMS = dict(seed=0, model="tiny", dtype="float32", load_in_4bit=False, cl_task="vqa", cl_task_orders=[ORDER],
              cl_vision_tower="", cl_lora_r=4, cl_lora_alpha=8, cl_lora_dropout=0.0, cl_lr=5e-3, cl_batch_size=4,
              cl_grad_accum=1, cl_steps_per_task=2, cl_warmup_ratio=0.0, cl_precision="fp32", cl_eval_every=0,
              cl_save_every=0, cl_val_samples=4, cl_replay_per_task=4, cl_key_steps=50, cl_key_lr=0.05,
              cl_route_grid=4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cl_run")
    source = cl.DataSource("", "", "", "synthetic_vqa", 0.25, 8, 8, 32)
    manifest = cl.build_tasks(source, run_dir / "data" / "vqa", seed=0)
    pool = cl.train(PARAMS, "adapters", run_dir, progress=False)
    return run_dir, manifest, pool


def adapter_of(name: str) -> str:
    return next(part for part in name.split(".") if part in ORDER)


def test_each_task_trains_only_its_own_adapter_and_leaves_the_others_bitwise_unchanged(run):
    _, _, pool = run
    model = pool.model
    for number, task in enumerate(ORDER):
        model.set_adapter(task)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and {adapter_of(n) for n in trainable} == {task}, trainable[:5]
        # the projector copies and the head's LoRA are the task's own
        assert any("multi_modal_projector" in n for n in trainable) and any("lm_head" in n for n in trainable)
        saved = load_tensors(pool.rows[number])  # written when this task's fit ended, before the later tasks
        assert set(saved) == set(trainable)
        now = dict(model.named_parameters())
        for name, value in saved.items():
            assert torch.equal(now[name].detach(), value), f"{name} changed after task {task} was trained"


def test_a_mixed_batch_equals_each_sample_through_its_own_adapter(run):
    run_dir, manifest, pool = run
    model, processor = pool.model, pool.processor
    _, tasks = cl.read_tasks(run_dir / "data" / "vqa")
    test = cl.mixed_test(tasks, seed=0)[:12]
    routes = [ORDER[i % 3] for i in range(len(test))]
    from brainvlm.model import collate
    batch = collate.Collator(processor, collate.CollateConfig(image_root=manifest["image_root"]),
                             prompt_only=True)(test)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        mixed = model(**inputs, adapter_names=routes).logits[:, -1]
        alone = []
        for row, route in enumerate(routes):
            model.set_adapter(route)
            alone.append(model(**{k: v[row:row + 1] for k, v in inputs.items()}).logits[0, -1])
        other = model(**inputs, adapter_names=[ORDER[(i + 1) % 3] for i in range(len(test))]).logits[:, -1]
    torch.testing.assert_close(mixed, torch.stack(alone), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(mixed, other, atol=1e-4), "the adapters do not differ: the comparison shows nothing"
    generated = predict_samples(model, processor, test, run_dir / "mixed.jsonl", manifest["image_root"], 12, 4,
                                progress=False, routes=dict(zip([s["id"] for s in test], routes)))
    for task in ORDER:
        model.set_adapter(task)
        chosen = [s for s, r in zip(test, routes) if r == task]
        each = predict_samples(model, processor, chosen, run_dir / f"alone_{task}.jsonl", manifest["image_root"],
                               1, 4, progress=False, weights=f"pool {task}")
        assert each == [g for g, r in zip(generated, routes) if r == task]


def test_keys_and_pool_reload_to_the_same_routed_answers(run, tmp_path):
    run_dir, manifest, pool = run
    _, tasks = cl.read_tasks(run_dir / "data" / "vqa")
    test = cl.mixed_test(tasks, seed=0)
    settings = cl.settings_for(PARAMS)
    queries = {d: cl.queries(pool.model, pool.processor, tasks[d]["train"], manifest["image_root"],
                             settings.route_grid, progress=False) for d in ORDER}
    assert queries["chest"]["image"].shape[1] == 16 * pool.model.config.vision_config.hidden_size  # 4 x 4 cells
    keys = cl.learn_keys({d: q["both"] for d, q in queries.items()}, ORDER, settings, tmp_path / "keys", pool.base)
    loaded, config = cl.load_keys(tmp_path / "keys")
    assert config["tasks"] == ORDER and config["top_k"] == 1 and config["encoder"] == pool.base
    assert config["route_grid"] == 4
    assert np.array_equal(np.stack(loaded.keys), np.stack(keys.keys))
    assert sorted(p.name for p in (tmp_path / "keys" / "keys").iterdir()) == [f"{t}.safetensors" for t in ORDER]
    test_queries = cl.queries(pool.model, pool.processor, test, manifest["image_root"], settings.route_grid,
                              progress=False)
    routes = loaded.route(test_queries["both"])
    record = cl.routing_record(tmp_path / "keys")
    before = cl.answer_routed(pool, test, routes, manifest["image_root"], tmp_path / "a.jsonl", record, 24, 4,
                              progress=False)
    cl.save_pool(pool.model, tmp_path / "pool")
    base_model, _ = load_base(pool.base, "float32", False)
    reloaded = cl.Trained("adapters", ORDER, cl.load_pool(base_model, tmp_path / "pool", ORDER), pool.processor,
                          pool.rows, pool.log, pool.base, pool.folder, settings)
    assert cl.pool_fingerprint(reloaded.model) == cl.pool_fingerprint(pool.model)
    after = cl.answer_routed(reloaded, test, routes, manifest["image_root"], tmp_path / "b.jsonl", record, 24, 4,
                             progress=False)
    assert list(before["prediction"]) == list(after["prediction"])


def test_every_method_gets_the_same_budget_and_a_finished_fit_is_loaded_not_retrained(run):
    run_dir, _, pool = run
    sequential = cl.train(PARAMS, "sequential", run_dir, progress=False)
    joint = cl.train(PARAMS, "joint", run_dir, progress=False)
    assert len(sequential.log) == len(joint.log) == len(pool.log) == 2 * len(ORDER)
    assert len(sequential.rows) == 3 and len(joint.rows) == 1
    stamp = pool.rows[0].stat().st_mtime_ns
    again = cl.train(PARAMS, "adapters", run_dir, progress=False)
    assert pool.rows[0].stat().st_mtime_ns == stamp
    assert cl.pool_fingerprint(again.model) == cl.pool_fingerprint(pool.model)


def test_chance_majority_and_bwt_interval_by_hand():
    def sample(i, question, answer, domain="abdomen"):
        return {"id": f"s{i}", "conversations": [{"role": "user", "content": [{"type": "image", "image_path": f"{i}.png"},
                                                                            {"type": "text", "text": question}]},
                                               {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
                "metadata": {"domain": domain, "answer_type": "CLOSED"}}
    train = [sample(1, "Q1", "yes"), sample(2, "Q1", "no"), sample(3, "Q1", "yes"), sample(4, "Q2", "mass")]
    test = [sample(5, "Q1", "no"), sample(6, "Q2", "none")]
    assert cl.chance(train, test) == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert cl.majority_predictions(train, test) == ["yes", "mass"]
    table = lambda correct: pd.DataFrame({"id": ["a", "b", "c"], "domain": ["abdomen", "abdomen", "chest"],
                                          "image": ["1", "2", "3"], "exact_match": correct})
    rows = [table([1.0, 1.0, 0.0]), table([0.0, 1.0, 1.0])]  # abdomen: 1.0 after its task, 0.5 after chest
    got = cl.bwt_interval(rows, ["abdomen", "chest"], n_boot=200, seed=0)
    assert got["point"] == pytest.approx(-0.5) and got["lo"] <= -0.5 <= got["hi"]


def test_settings_and_orders_are_checked():
    with pytest.raises(SettingsError, match="cl_steps_per_task"):
        cl.settings_for({k: v for k, v in PARAMS.items() if k != "cl_steps_per_task"})
    with pytest.raises(SettingsError, match="knee"):
        cl.check_order(["abdomen", "knee"], ORDER)
    with pytest.raises(SettingsError, match="unknown"):
        cl.train(PARAMS, "finetune", ".")


def test_every_step_runs_on_real_vqa_rad_files(tmp_path):
    from pathlib import Path

    from brainvlm.data import validate, vqa_tasks
    from brainvlm.eval import continual

    root = Path(__file__).parents[1] / "data" / "vqa_rad_cl"
    source = cl.DataSource(str(root / "trainset.json"), str(root / "testset.json"), str(root / "images"),
                           "vqa_rad", 0.25, 0, 0, 64)
    manifest = cl.build_tasks(source, tmp_path / "data" / "rad", seed=0)
    _, tasks = cl.read_tasks(tmp_path / "data" / "rad")
    assert manifest["domains"] == ORDER
    files = [p for by in manifest["files"].values() for p in by.values()]
    assert validate.validate_files(files, image_root=manifest["image_root"]).empty
    audit = vqa_tasks.image_audit({s: [x for by in tasks.values() for x in by[s]] for s in ("train", "val", "test")})
    checks = audit.set_index("check")["passed"]
    assert not checks["no image in both train and test"]  # VQA-RAD's test images are training images
    assert checks["no image in both train and val"]  # the validation split is carved by image
    params = {**PARAMS, "cl_task": "rad", "cl_steps_per_task": 1, "cl_task_orders": [["chest", "abdomen", "head"]]}
    pool = cl.train(params, "adapters", tmp_path, progress=False)
    assert pool.order == ["chest", "abdomen", "head"]
    test = cl.mixed_test(tasks, seed=0)
    queries = {d: cl.queries(pool.model, pool.processor, tasks[d]["train"], manifest["image_root"], progress=False)
               for d in pool.order}
    keys = cl.learn_keys({d: q["both"] for d, q in queries.items()}, pool.order, pool.settings, pool.folder, pool.base)
    routes = keys.route(cl.queries(pool.model, pool.processor, test, manifest["image_root"], progress=False)["both"])
    zero = cl.answer_zero_shot(pool, test, manifest["image_root"], tmp_path / "zero.jsonl", 8, 4, progress=False)
    routed = cl.answer_routed(pool, test, routes, manifest["image_root"], tmp_path / "routed.jsonl",
                              cl.routing_record(pool.folder), 8, 4, progress=False)
    matrix = cl.accuracy_matrix(zero, [routed] * 3, pool.order)
    assert len(matrix) == 4 and all(0 <= v <= 1 for row in matrix for v in row)
    assert set(continual.continual_metrics(matrix, zero_shot=True)) >= {"final_average", "bwt", "forgetting", "fwt"}


def test_the_command_line_trains_a_method_and_resumes_an_interrupted_task(tmp_path):
    from brainvlm.app.cli import main
    from brainvlm.core.paths import PARAMS_DIR
    from brainvlm.train.fit import TrainingInterrupted

    cl.build_tasks(cl.DataSource("", "", "", "synthetic_vqa", 0.25, 8, 8, 32), tmp_path / "data" / "vqa", seed=0)
    argv = ["train", "--study", "cl", "--task", "sequential", "--params", str(PARAMS_DIR / "ci.yaml"),
            "--run-dir", str(tmp_path), "-p", "cl_steps_per_task", "3", "-p", "cl_save_every", "1", "--no-progress"]
    with pytest.raises(TrainingInterrupted):
        main([*argv, "--stop-after", "2"])
    folder = tmp_path / "models" / "vqa_sequential_abdomen-chest-head"
    assert (folder / "1_abdomen" / "checkpoints" / "step-2").is_dir()
    assert main([*argv, "--resume"]) == 0
    log = pd.read_csv(folder / "1_abdomen" / "log.csv")
    assert list(log["step"]) == [1, 2, 3]  # steps 1-2 from the interrupted run, step 3 after resuming
    assert all((folder / f"{k}_{d}" / "adapter" / TRAINABLE).is_file() for k, d in enumerate(ORDER, 1))


def test_another_task_order_trains_both_methods_in_that_order_and_measures_them(run, tmp_path):
    run_dir, manifest, pool = run
    _, tasks = cl.read_tasks(run_dir / "data" / "vqa")
    image_root = manifest["image_root"]
    test = cl.mixed_test(tasks, seed=0)
    zero_shot = cl.answer_zero_shot(pool, test, image_root, tmp_path / "zero.jsonl", 36, 4, progress=False)
    train_queries = {d: cl.queries(pool.model, pool.processor, tasks[d]["train"], image_root) for d in ORDER}
    test_queries = cl.queries(pool.model, pool.processor, test, image_root)
    other = ["head", "chest", "abdomen"]
    measured = cl.order_measures(PARAMS, run_dir, other, test, zero_shot, train_queries, test_queries, image_root,
                                 tmp_path, batch_size=36, max_new_tokens=4, progress=False)
    assert set(measured) == {"sequential", "adapters · keys"}
    for name in ("sequential", "adapters"):
        folder = run_dir / "models" / f"vqa_{name}_head-chest-abdomen"
        assert sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[0].isdigit()) == [
            "1_head", "2_chest", "3_abdomen"]
    rows = [pd.read_json(tmp_path / f"06_vqa_adapters_head-chest-abdomen_keys_row{i}.jsonl", lines=True)
            for i in (1, 2, 3)]
    assert [len(r) for r in rows] == [len(test)] * 3
    tables = [cl.score_table(test, list(r.set_index("id").loc[[s["id"] for s in test], "prediction"])) for r in rows]
    from brainvlm.eval import continual
    again = continual.continual_metrics(cl.accuracy_matrix(zero_shot, tables, other), zero_shot=True)
    assert again == pytest.approx(measured["adapters · keys"])  # the written answers give the returned measures
