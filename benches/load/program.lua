-- The benchmark's program for HAProxy + Lua: sets txn.verdict to "401", "404", "v1" or "v2".
local keys = { ["bench-key-alice"] = true, ["bench-key-bob"] = true }

core.register_action("program", { "http-req" }, function(txn)
    local key = txn.sf:req_hdr("x-api-key")
    if key == nil or not keys[key] then
        txn:set_var("txn.verdict", "401")
        return
    end
    if string.sub(txn.sf:path(), 1, 5) ~= "/api/" then
        txn:set_var("txn.verdict", "404")
        return
    end
    if txn.sf:req_hdr("x-canary") == "v2" or math.random() >= 0.8 then
        txn:set_var("txn.verdict", "v2")
    else
        txn:set_var("txn.verdict", "v1")
    end
end)
