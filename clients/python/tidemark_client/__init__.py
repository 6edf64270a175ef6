"""tidemark-client: call a Tidemark exchange from Python.

>>> from tidemark_client import Client
>>> with Client.from_profile("https://127.0.0.1:50051", "certs/aus-node") as aus:
...     submitted = aus.submit(report_dict)

See the package README for an example per role.
"""

from . import dsse, tlog
from .client import CHANNEL_OPTIONS, DIMENSIONS, METRICS, Client, SigningKey, Stream, Submitted
from .errors import PUSHBACK_RETRIES, TidemarkError

__all__ = ["CHANNEL_OPTIONS", "DIMENSIONS", "METRICS", "PUSHBACK_RETRIES", "Client", "SigningKey", "Stream", "Submitted", "TidemarkError", "dsse", "tlog"]
