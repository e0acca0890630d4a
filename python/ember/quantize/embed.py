"""int8 embedding tables (QuantConfig.embeddings): one scale per row.

  Gather(table f32 [V, D], ids) -> Mul(Cast(Gather(table_q int8 [V, D], ids), FLOAT),
                                       Gather(row_scale f32 [V, 1], ids))
row_scale[v] = max(max_d |table[v, d]| / 127, FLT_MIN); the Mul writes the Gather's output name.
"""

from __future__ import annotations

from ember.quantize.dynamic import quantize_weight_int8
from ember.quantize.select import Decision, display_name


def apply(ed, gathers, config):
    """gathers: [(Gather node, table name)] -> [Decision]."""
    from onnx import TensorProto

    tables = {}
    decisions = []
    for n, table in gathers:
        if table not in tables:
            tq, scale = quantize_weight_int8(ed.const_array(table), True, axis=0)
            tables[table] = (ed.add_init(f"{table}_int8", tq),
                             ed.add_init(f"{table}_row_scale", scale.reshape(-1, 1)))
        tq, rs = tables[table]
        y, ids = n.output[0], n.input[1]
        name = n.name or display_name(n)
        g, gf, gs = (ed.fresh(f"{y}_{sfx}") for sfx in ("int8", "float", "row_scale"))
        ed.replace(n)
        ed.add_node(n, "Gather", [tq, ids], [g], name, axis=0)
        ed.add_node(n, "Cast", [g], [gf], f"{name}/Cast", to=TensorProto.FLOAT)
        ed.add_node(n, "Gather", [rs, ids], [gs], f"{name}/Gather_scale", axis=0)
        ed.add_node(n, "Mul", [gf, gs], [y], f"{name}/Mul_scale")
        decisions.append(Decision(display_name(n), "Gather", True, "", "int8-embedding",
                                  tuple(ed.const_array(table).shape), y))
    return decisions
