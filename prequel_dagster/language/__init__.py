"""The small languages a config holds, parsed when it loads: mapping expressions (compiled to Arrow
compute), request templates (values encoded for their place) and record_schema regular expressions
(RE2). They depend on nothing else in the package, so every layer may use them."""
