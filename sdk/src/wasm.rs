//! The thin `wasi:http` edge: turns an `incoming-request` into a [`Request`], calls the
//! handler, and writes the [`Response`] to the `response-outparam`. Only this file knows
//! about WASI HTTP resources.

use std::io::Write as _;

pub use wasip2;
pub use wasip2::exports::http::incoming_handler;
pub use wasip2::http::types::{IncomingRequest, ResponseOutparam};

use wasip2::http::types::{
    ErrorCode, Fields, Method as WasiMethod, OutgoingBody, OutgoingResponse,
};

use crate::http::{Method, Request, Response};

/// Serves one request with `handler`. Called by the code [`crate::http_component!`]
/// generates.
pub fn serve(request: IncomingRequest, out: ResponseOutparam, handler: fn(Request) -> Response) {
    let req = match read_request(request) {
        Ok(r) => r,
        Err(message) => {
            ResponseOutparam::set(out, Err(ErrorCode::InternalError(Some(message))));
            return;
        }
    };
    let resp = handler(req);
    write_response(out, resp);
}

fn read_request(request: IncomingRequest) -> Result<Request, String> {
    let method = match request.method() {
        WasiMethod::Get => Method::Get,
        WasiMethod::Head => Method::Head,
        WasiMethod::Post => Method::Post,
        WasiMethod::Put => Method::Put,
        WasiMethod::Patch => Method::Patch,
        WasiMethod::Delete => Method::Delete,
        WasiMethod::Options => Method::Options,
        WasiMethod::Connect => Method::Other("CONNECT".into()),
        WasiMethod::Trace => Method::Other("TRACE".into()),
        WasiMethod::Other(s) => Method::Other(s),
    };
    let path_and_query = request.path_with_query().unwrap_or_else(|| "/".into());
    let mut req = Request::new(method, &path_and_query);
    req.headers = request.headers().entries();
    let body = request
        .consume()
        .map_err(|()| "request body already consumed".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "request body stream unavailable".to_string())?;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => req.body.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the request body: {e:?}")),
        }
    }
    drop(stream);
    let _trailers = wasip2::http::types::IncomingBody::finish(body);
    Ok(req)
}

fn write_response(out: ResponseOutparam, resp: Response) {
    let pairs: Vec<(String, Vec<u8>)> = resp
        .headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.into_bytes()))
        .collect();
    let headers = match Fields::from_list(&pairs) {
        Ok(h) => h,
        Err(e) => {
            ResponseOutparam::set(
                out,
                Err(ErrorCode::InternalError(Some(format!(
                    "handler produced an invalid header: {e:?}"
                )))),
            );
            return;
        }
    };
    let response = OutgoingResponse::new(headers);
    if response.set_status_code(resp.status).is_err() {
        ResponseOutparam::set(
            out,
            Err(ErrorCode::InternalError(Some(format!(
                "handler produced an invalid status {}",
                resp.status
            )))),
        );
        return;
    }
    let Ok(body) = response.body() else {
        ResponseOutparam::set(out, Err(ErrorCode::InternalError(None)));
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if !resp.body.is_empty() {
        let Ok(mut stream) = body.write() else { return };
        // The host reports a failed write (client gone, response too large) by closing
        // the stream; there is nobody left to tell, so stop writing.
        if stream.write_all(&resp.body).is_err() || stream.flush().is_err() {
            return;
        }
    }
    let _ = OutgoingBody::finish(body, None);
}
