import json
import random

from toolturn.core.tasks.llm_goals import data_view, row_texts


def test_a_data_view_is_the_json_of_its_sampled_rows():
    rows = {"customer": [{"id": i, "name": f"Zoë {i}", "score": i / 3, "note": None} for i in range(7)],
            "order": [{"id": 1, "total": 12.5, "paid": True}], "tag": []}
    view = data_view(row_texts(rows), random.Random(5))
    rng = random.Random(5)
    assert view == "\n".join(f"{slug}: " + json.dumps(rng.sample(items, min(3, len(items))), ensure_ascii=False)
                             for slug, items in rows.items())
