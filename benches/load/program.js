// The benchmark's program for nginx + njs: "401", "404", or the subset ("v1"/"v2") to serve.
const keys = { "bench-key-alice": true, "bench-key-bob": true };

function decide(r) {
    const key = r.headersIn["x-api-key"];
    if (!key || !keys[key]) {
        return "401";
    }
    if (!r.uri.startsWith("/api/")) {
        return "404";
    }
    if (r.headersIn["x-canary"] === "v2" || Math.random() >= 0.8) {
        return "v2";
    }
    return "v1";
}

export default { decide };
