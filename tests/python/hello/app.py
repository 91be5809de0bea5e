"""A wasi:http component written in Python, built with componentize-py (CPython inside,
about 18 MB): the size real Python, JavaScript and .NET components have. It answers
every request with a greeting that names the path, so a test can tell it answered."""

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = request.path_with_query() or "/"
        body = f"hello from CPython at {path}\n".encode()
        response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
        response.set_status_code(200)
        out = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        stream = out.write()
        stream.blocking_write_and_flush(body)
        stream.__exit__(None, None, None)
        OutgoingBody.finish(out, None)
