"""The scripted tour, `sms-pipeline demo` (`make demo`): not part of the runtime.

One job per module: `scenario` (the message mix), `environment` (the settings of every
demo process), `producer` (the child that enqueues), `record` (what a run put in and the
rows it finds again), `progress` (following the run), `report` (the closing tables and
verdict), `run` (starting and stopping the child processes). Only the `demo` command
imports this package; its plots need the `demo` extra.
"""

from sms_pipeline.demo.run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
