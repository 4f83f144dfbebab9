from world_models.logs import MetricsLogger, plot_curves, read_metrics


def test_metrics_log_truncate_and_plot(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=True)
    for step in range(5):
        logger.log(step, loss=10 - step)
    logger.truncate_after(2)
    logger.log(3, loss=1.5)
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 9, "loss"')  # torn line from a killed writer
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3] and rows[-1]["loss"] == 1.5
    assert list((tmp_path / "tensorboard").iterdir())
    plot_curves(tmp_path / "metrics.jsonl", ["loss", "absent"], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
