"""Stateful resources: files (multipart uploads), batches, vector stores (their files and
file batches), conversations, uploads and fine-tuning jobs, and the lookups of them.

Ids are minted with the real API's prefixes (``file-``, ``batch_``, ``vs_``, ``vsfb_``,
``conv_``, ``upload_``, ``part_``, ``ftjob-``; responses are ``resp_``), and a request
that names an id this provider never made (as a path parameter, or in its body:
``previous_response_id``, ``file_id``, ``input_file_id``, ``vector_store_ids`` ...)
is answered 404 with an OpenAI error body, as a provider that cannot know it does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from failover.testing._host import Host, error_body

Form = dict[str, Any]  # a multipart body: field name -> text, or (filename, bytes) for a file
Answer = tuple[int, Any]

# The body keys that name a resource of the provider's.
_REFERENCES = frozenset(
    {
        "file_id",
        "file_ids",
        "input_file_id",
        "training_file",
        "validation_file",
        "previous_response_id",
        "vector_store_ids",
        "conversation",
    }
)
# Each collection: its objects' ``object``, their name in a 404, and their ids' prefix.
_KINDS = {
    "/files": ("file", "File", "file-"),
    "/batches": ("batch", "Batch", "batch_"),
    "/vector_stores": ("vector_store", "VectorStore", "vs_"),
    "/conversations": ("conversation", "Conversation", "conv_"),
    "/uploads": ("upload", "Upload", "upload_"),
    "/fine_tuning/jobs": ("fine_tuning.job", "FineTuningJob", "ftjob-"),
    "/responses": ("response", "Response", "resp_"),
}


def not_found(message: str) -> Answer:
    return 404, error_body(404, message, None)


def form(body: bytes, content_type: str) -> Form:
    """The fields of a ``multipart/form-data`` body."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    fields: Form = {}
    parts = message.iter_parts() if hasattr(message, "iter_parts") else []
    for part in parts:
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        filename = part.get_filename()
        fields[str(name)] = (filename, data) if filename is not None else data.decode()
    return fields


def _references(node: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(node, dict):
        if key == "conversation" and isinstance(node.get("id"), str):
            yield node["id"]
        for name, value in node.items():
            yield from _references(value, name)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item, key)
    elif isinstance(node, str) and key in _REFERENCES:
        yield node


def missing(provider: Host, payload: Any) -> Answer | None:
    """A 404 for the first id the body names that this provider never made."""
    for resource in _references(payload):
        if provider._stored(resource) is None:
            return not_found(f"No such object: {resource!r} (fake provider {provider.name!r})")
    return None


def _new(prefix: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"{prefix}{secrets.token_hex(12)}",
        "object": kind,
        "created_at": _now(),
        **fields,
    }


def _now() -> int:
    return int(time.time())


def _counts(total: int) -> dict[str, int]:
    return {"in_progress": 0, "completed": total, "failed": 0, "cancelled": 0, "total": total}


def _echoed(payload: Any, **defaults: Any) -> dict[str, Any]:
    """The body's values of the keys named, as the API echoes them (the default if none)."""
    return {key: payload.get(key, default) for key, default in defaults.items()}


# What a POST to each collection makes of its body (JSON) and fields (multipart): the
# new object's fields but its id, ``object`` and ``created_at`` (see _made).


def _file(payload: Any, fields: Form) -> dict[str, Any]:
    filename, data = fields.get("file") or ("upload", b"")
    return {
        "bytes": len(data),
        "filename": filename or "upload",
        "purpose": fields.get("purpose", ""),
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }


def _batch(payload: Any, fields: Form) -> dict[str, Any]:
    return {
        **_echoed(payload, endpoint=None, input_file_id=None, completion_window=None),
        "status": "validating",
        "metadata": payload.get("metadata"),
        "request_counts": {"completed": 0, "failed": 0, "total": 0},
    }


def _vector_store(payload: Any, fields: Form) -> dict[str, Any]:
    return {
        "name": payload.get("name") or "",
        "usage_bytes": 0,
        "file_counts": _counts(len(payload.get("file_ids") or [])),
        "status": "completed",
        "last_active_at": _now(),
        "metadata": payload.get("metadata"),
        "expires_at": None,
    }


def _conversation(payload: Any, fields: Form) -> dict[str, Any]:
    return {"metadata": payload.get("metadata") or {}}


def _upload(payload: Any, fields: Form) -> dict[str, Any]:
    return {
        **_echoed(payload, bytes=0, filename="", purpose=""),
        "status": "pending",
        "expires_at": _now() + 3600,
        "file": None,
    }


def _job(payload: Any, fields: Form) -> dict[str, Any]:
    return {
        **_echoed(payload, model=None, training_file=None, validation_file=None),
        "status": "validating_files",
        "hyperparameters": {},
        "organization_id": "org-fake",
        "result_files": [],
        "seed": 0,
        "error": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "trained_tokens": None,
    }


_MAKERS: dict[str, Callable[[Any, Form], dict[str, Any]]] = {
    "/files": _file,
    "/batches": _batch,
    "/vector_stores": _vector_store,
    "/conversations": _conversation,
    "/uploads": _upload,
    "/fine_tuning/jobs": _job,
}


def _made(collection: str, payload: Any, fields: Form) -> dict[str, Any]:
    """A new object of ``collection``, made of a POST's body and fields."""
    kind, _, prefix = _KINDS[collection]
    return _new(prefix, kind, **_MAKERS[collection](payload, fields))


def _kept(provider: Host, made: dict[str, Any]) -> dict[str, Any]:
    provider._store(made)
    return made


def _action(
    provider: Host, found: dict[str, Any], action: str, payload: Any
) -> dict[str, Any] | None:
    """``POST /{collection}/{id}/{action}``: what it makes or changes (None: unknown).

    A vector store's file is the file itself, seen from the store: not kept apart.
    """
    kind, owner = found["object"], found["id"]
    if kind == "batch" and action == "cancel":
        return _kept(provider, {**found, "status": "cancelling"})
    if kind == "vector_store" and action == "files":
        return {
            "id": payload.get("file_id"),
            "object": "vector_store.file",
            "created_at": _now(),
            "vector_store_id": owner,
            "status": "completed",
            "usage_bytes": 0,
            "last_error": None,
        }
    if kind == "vector_store" and action == "file_batches":
        count = len(payload.get("file_ids") or [])
        return _kept(
            provider,
            _new(
                "vsfb_",
                "vector_store.files_batch",
                vector_store_id=owner,
                status="in_progress",
                file_counts=_counts(count),
            ),
        )
    if kind == "upload" and action == "parts":
        return _kept(provider, _new("part_", "upload.part", upload_id=owner))
    if kind == "upload" and action == "complete":
        fields: Form = {"file": (found["filename"], b""), "purpose": found["purpose"]}
        made = {**_made("/files", None, fields), "bytes": found["bytes"]}
        provider._store(made)
        return _kept(provider, {**found, "status": "completed", "file": made})
    return None


def route(provider: Host, method: str, path: str, payload: Any, fields: Form) -> Answer | None:
    """The answer for a path of the stateful collections (None: not one of theirs)."""
    for collection, (kind, title, _) in _KINDS.items():
        if path == collection and method == "POST" and collection in _MAKERS:
            made = _made(collection, payload or {}, fields)
            provider._store(made)
            return 200, made
        if not path.startswith(collection + "/"):
            continue
        resource, _, action = path.removeprefix(collection + "/").partition("/")
        found = provider._stored(resource)
        if found is None or found.get("object") != kind:
            return not_found(f"No such {title} object: {resource!r}")
        if method == "GET" and not action:
            return 200, found
        if method == "DELETE" and not action:
            provider._forget(resource)
            return 200, {"id": resource, "object": f"{kind}.deleted", "deleted": True}
        if method == "POST":
            changed = _action(provider, found, action, payload or {})
            if changed is not None:
                return 200, changed
    return None
