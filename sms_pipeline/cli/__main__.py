"""`python -m sms_pipeline.cli ...`: the same as the `sms-pipeline` script.

The demo starts its children this way (`sys.executable -m sms_pipeline.cli`), so they
run with the demo's own interpreter even when the venv's `bin` is not on PATH.
"""

from __future__ import annotations

import sys

from sms_pipeline.cli import main

sys.exit(main())
