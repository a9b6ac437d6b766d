"""The Open Inference Protocol's infer request: its JSON part and its BYTES input tensors.

Inputs: `text` (required) and `text_pair` (optional, as many elements: sentence pairs), each
BYTES with shape `[n]` or `[n, 1]`, as JSON `data` or with the binary tensor extension that
`tritonclient.http` uses by default (each input's `binary_data_size` bytes, in input order,
after the JSON part).

No HTTP here: the body's bytes and the Inference-Header-Content-Length value come in, texts go
out, and a malformed request is `InvalidRequest` (422, rendered by app.api.open_inference); the
same tensors would come over the protocol's gRPC transport.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from app.schemas import unicode_error
from app.serving.engine import Text
from app.serving.errors import InvalidRequest

INPUT = "text"
PAIR_INPUT = "text_pair"


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[dict, list[Text]]:
    """The JSON part and the inputs: texts, or (text, text_pair) pairs."""
    split = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidRequest(f"bad Inference-Header-Content-Length {header_length!r}")
        split = int(header_length)
    try:
        payload = json.loads(body[:split])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("the request's JSON is nested too deeply") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InvalidRequest("the request needs an 'inputs' list")
    request_id = payload.get("id", "")  # echoed in the answer
    if not isinstance(request_id, str) or unicode_error(request_id) is not None:
        raise InvalidRequest("the request's 'id' must be a string of Unicode text")
    tensors = _named_inputs(payload["inputs"])
    columns, offset, binary = {}, 0, body[split:]
    for name, tensor in tensors.items():
        columns[name], offset = _input_texts(name, tensor, binary, offset)
    if offset != len(binary):
        raise InvalidRequest("binary_data_size does not match the binary part of the request")
    texts = columns[INPUT]
    pairs = columns.get(PAIR_INPUT)
    if pairs is None:
        return payload, list(texts)
    if len(pairs) != len(texts):
        raise InvalidRequest(f"{len(texts)} texts but {len(pairs)} text_pair elements")
    return payload, list(zip(texts, pairs, strict=True))


def _named_inputs(inputs: list) -> dict[str, dict]:
    if not all(isinstance(t, dict) for t in inputs):
        raise InvalidRequest("each input must be an object")
    names = [t.get("name") for t in inputs]
    if INPUT not in names or len(set(names)) != len(names) or set(names) - {INPUT, PAIR_INPUT}:
        raise InvalidRequest(f"give an input named {INPUT!r} (and optionally {PAIR_INPUT!r})")
    return {t["name"]: t for t in inputs}


def _input_texts(name: str, tensor: dict, binary: bytes, offset: int) -> tuple[list[str], int]:
    """One input's texts and where the next input's binary data starts."""
    if tensor.get("datatype") != "BYTES":
        raise InvalidRequest(f"input {name!r} must have datatype BYTES")
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is None:
        data = tensor.get("data")
        texts = _flatten(data, depth=2) if isinstance(data, list) else None
        if texts is None or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest(f"input {name!r} needs 'data': a list of strings")
    else:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidRequest(f"input {name!r} has a bad binary_data_size")
        if offset + size > len(binary):
            raise InvalidRequest("binary_data_size does not match the binary part of the request")
        texts = decode_bytes_tensor(binary[offset : offset + size])
        offset += size
    shape = tensor.get("shape")
    count = _elements(shape)
    if count != len(texts) or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise InvalidRequest(f"input shape {shape} does not fit {len(texts)} texts ([n] or [n, 1])")
    if not texts or any(not t for t in texts):
        raise InvalidRequest(f"input {name!r} holds no texts, or an empty one")
    for index, text in enumerate(texts):
        problem = unicode_error(text)  # JSON data may hold "\ud800"; the binary part is UTF-8
        if problem is not None:
            raise InvalidRequest(f"{name}[{index}] {problem}")
    return texts, offset


def _elements(shape: Any) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InvalidRequest("input 'shape' must be a list of non-negative integers")
    count = 1
    for dim in shape:
        count *= dim
    return count


def _flatten(data: list, depth: int) -> list | None:
    """The items of `data` nested at most `depth` lists deep ([n] or [n, 1]), else None."""
    out: list = []
    for item in data:
        if not isinstance(item, list):
            out.append(item)
            continue
        inner = _flatten(item, depth - 1) if depth > 1 else None
        if inner is None:
            return None
        out.extend(inner)
    return out


def decode_bytes_tensor(raw: bytes) -> list[str]:
    """Triton's BYTES serialisation: each element a 4-byte little-endian length, then bytes."""
    texts, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidRequest("truncated BYTES tensor")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidRequest("truncated BYTES tensor")
        try:
            texts.append(raw[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidRequest("a text of the BYTES tensor is not UTF-8") from None
        offset += length
    return texts
