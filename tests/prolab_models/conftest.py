from tests.helpers.demo_runs import demo_label_space, demo_root, trained_run  # noqa: F401
