"""Kubernetes objects as the lab kubelet handles them: plain dicts decoded from the API's JSON.

The kubelet reads a handful of fields from a few kinds (Pod, ConfigMap, Secret, Service), so a
dict alias keeps the API's own field names in the code instead of a parallel typed model.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]
