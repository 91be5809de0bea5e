//! The smallest useful `wasi:http` handler: answers every request with `hello`.
//! It uses no SDK, so it also shows that any standard component runs on dabba.

#[cfg(target_arch = "wasm32")]
mod component {
    use std::io::Write as _;

    use wasip2::http::types::{
        Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };

    struct Hello;

    impl wasip2::exports::http::incoming_handler::Guest for Hello {
        fn handle(_request: IncomingRequest, out: ResponseOutparam) {
            let headers =
                Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
                    .expect("valid header");
            let response = OutgoingResponse::new(headers);
            let body = response.body().expect("first call");
            ResponseOutparam::set(out, Ok(response));
            let mut stream = body.write().expect("first call");
            let _ = stream.write_all(b"hello");
            let _ = stream.flush();
            drop(stream);
            let _ = OutgoingBody::finish(body, None);
        }
    }

    wasip2::http::proxy::export!(Hello with_types_in wasip2);
}
