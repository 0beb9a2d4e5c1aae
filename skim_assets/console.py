"""What `skim demo` / `skim materialize` print: one line per step that materialized assets (checks print only when
they fail), and, for long steps, their own progress messages at most once per interval. Dagster's event stream
stays in the instance (the UI shows all of it); `SKIM_LOG_LEVEL=DEBUG` (or INFO) brings Dagster's console logger
back instead."""

import logging
import sys
import time

import dagster as dg

PROGRESS_INTERVAL_S = 30.0  # a long step's progress line at most this often


FAILURE_LINES = 6  # of a failed step's own error message on the console (the UI has the whole traceback)


# Dagster's wrappers around a step's own exception ("Error occurred while executing op ..."), which say nothing
DAGSTER_WRAPPERS = {"DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"}


def failure_reason(data) -> list[str]:
    """The first lines of the error that made a step fail, as `module.Type: message`: the step's own exception,
    not Dagster's wrapper around it (nor the low-level cause it was raised from, which names no file or field)."""
    error = getattr(data, "error", None)
    while error is not None and error.cls_name in DAGSTER_WRAPPERS and (error.cause or error.context):
        error = error.cause or error.context
    if error is None:
        return []
    lines = [line for line in error.message.strip().splitlines() if line.strip()]
    return lines[:FAILURE_LINES] + (["..."] if len(lines) > FAILURE_LINES else [])


class StepProgressHandler(logging.Handler):
    """Turns a run's log records into short console lines (see the module docstring)."""

    def __init__(self, stream, interval_s: float = PROGRESS_INTERVAL_S):
        super().__init__(logging.DEBUG)  # step starts and ends are DEBUG events
        self.stream, self.interval_s = stream, interval_s
        self.started: dict[str, float] = {}  # step -> start time
        self.last_progress: dict[str, float] = {}  # step -> time of its last progress line
        self.materialized: dict[str, list[str]] = {}  # step -> assets it materialized

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        step = meta.get("step_key") or "run"
        event = meta.get("dagster_event")
        message = str(meta.get("orig_message", record.getMessage()))
        now = time.monotonic()
        if event is not None:
            kind = event.event_type_value
            if kind == "STEP_START":
                self.started[step] = self.last_progress[step] = now
            elif kind == "ASSET_MATERIALIZATION":
                self.materialized.setdefault(step, []).append(event.asset_key.to_user_string())
            elif kind == "STEP_SUCCESS" and step in self.materialized:  # steps that wrote assets, not checks
                seconds = now - self.started.get(step, now)
                self._print(f"{time.strftime('%H:%M:%S')} {', '.join(self.materialized.pop(step))} done in "
                            f"{seconds:.1f}s")
            elif kind in ("STEP_FAILURE", "RUN_FAILURE"):
                self._print(f"FAILED {step}: {message}")
                reason = failure_reason(event.event_specific_data)
                if reason:
                    self._print("\n".join(f"  {line}" for line in reason))
            elif kind == "ASSET_CHECK_EVALUATION":
                data = event.event_specific_data
                if data is not None and not getattr(data, "passed", True):
                    summary = (data.description or "").strip().splitlines()[:1]
                    self._print(f"  check {data.asset_key.to_user_string()}:{data.check_name} did not pass: "
                                f"{''.join(summary)}")
            return
        first_line = message.strip().splitlines()[0] if message.strip() else ""
        if record.levelno < logging.INFO:
            return
        if record.levelno >= logging.WARNING:
            self._print(f"  {step}: {record.levelname.lower()}: {first_line}")
        elif now - self.last_progress.get(step, float("-inf")) >= self.interval_s:
            self.last_progress[step] = now
            self._print(f"  {step}: {first_line}")


@dg.logger(
    config_schema={"interval_s": dg.Field(float, default_value=PROGRESS_INTERVAL_S,
                                          description="A long step's progress line at most this often.")},
    description="One console line per finished step, long steps' progress at most every interval_s.",
)
def step_progress_logger(init_context) -> logging.Logger:
    logger = logging.Logger("skim_progress", level=logging.DEBUG)
    logger.addHandler(StepProgressHandler(sys.stdout, init_context.logger_config["interval_s"]))
    return logger
