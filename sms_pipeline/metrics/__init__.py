"""Metrics of the SMS channel: the catalogue, stored counters, the exporter and the report.

Services record through :mod:`sms_pipeline.metrics.hooks`; the exporter
(:mod:`sms_pipeline.metrics.collector`) and the report (:mod:`sms_pipeline.metrics.report`)
read the database. Submodules are imported on use, so importing this package is cheap.
"""
