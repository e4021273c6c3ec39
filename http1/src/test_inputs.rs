//! Random messages for the differential tests against hyper, on both sides: fields, a body framed
//! by length or by chunks of random sizes (with extensions and trailers), and single-byte
//! mutations of them.

/// Random `x-field-N` header lines.
pub(crate) fn fields(rng: &mut fastrand::Rng, out: &mut Vec<u8>) {
    for i in 0..rng.usize(..6) {
        out.extend_from_slice(format!("x-field-{i}: {}\r\n", rng.u32(..)).as_bytes());
    }
}

/// Ends a head and adds a random body of up to 300 bytes: with its `content-length` when
/// `by_length`, else chunked in random pieces (hex sizes in either case, some with an extension)
/// and sometimes a trailer.
pub(crate) fn body(rng: &mut fastrand::Rng, by_length: bool, out: &mut Vec<u8>) {
    let body: Vec<u8> = (0..rng.usize(..300))
        .map(|_| rng.alphanumeric() as u8)
        .collect();
    if by_length {
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        return;
    }
    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
    let mut rest = &body[..];
    while !rest.is_empty() {
        let n = rng.usize(1..=rest.len());
        let ext = if rng.bool() { ";a=b" } else { "" };
        let size = if rng.bool() {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(format!("{size}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if rng.bool() {
        out.extend_from_slice(b"x-trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// One random change: a byte flipped, removed, or put in.
fn mutated(rng: &mut fastrand::Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    let at = rng.usize(..bytes.len());
    let byte = [
        b'\r', b'\n', b' ', b':', b';', b'0', b'a', b'\t', 0x80, b'/',
    ][rng.usize(..10)];
    match rng.u8(..3) {
        0 => bytes[at] = byte,
        1 => {
            bytes.remove(at);
        }
        _ => bytes.insert(at, byte),
    }
    bytes
}

/// The inputs of a differential run: the hand-written `shapes`, 300 `generated` messages, and
/// 600 mutations of those, from a fixed seed.
pub(crate) fn inputs(
    seed: u64,
    shapes: &[&[u8]],
    generated: fn(&mut fastrand::Rng) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut inputs: Vec<Vec<u8>> = shapes.iter().map(|s| s.to_vec()).collect();
    for _ in 0..300 {
        inputs.push(generated(&mut rng));
    }
    for i in 0..600 {
        let base = inputs[i % inputs.len()].clone();
        inputs.push(mutated(&mut rng, base));
    }
    inputs
}
