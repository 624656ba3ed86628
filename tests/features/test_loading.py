"""Reading exports through mappings, with bad rows reported by line."""

import textwrap

import pytest

from features.loading import RowError, load_tickets
from features.mapping import MappingError, load_mapping

MAPPING = textwrap.dedent(
    """
    name = "tiny"
    null_values = ["", "0"]
    [fields]
    ticket_id = "编号"
    created_at = "开始时间"
    description = "现象"
    system = "系统"
    closure_notes = ["原因", "处理"]
    [targets.category]
    kind = "multiclass"
    column = "原因类"
    field = "category"
    empty = "other"
    [targets.category.values]
    "软件设计缺陷" = "system"
    "运行维护不当" = "human"
    """
)


def write(tmp_path, csv_text, mapping=MAPPING):
    data = tmp_path / "export.csv"
    data.write_text(textwrap.dedent(csv_text).lstrip(), encoding="utf-8")
    path = tmp_path / "mapping.toml"
    path.write_text(mapping, encoding="utf-8")
    return data, path


CSV = """
    编号,开始时间,现象,系统,原因类,原因,处理
    1,2017-01-02 10:00:00,"第一行
    第二行",I6000,软件设计缺陷,代码缺陷,重启
    2,not a date,数据库宕机,i6000,运行维护不当,0,0
    3,2017-01-03 11:00:00,网络中断,0,0,,
    1,2017-01-04 11:00:00,重复编号,ERP,运行维护不当,,
    """


def test_bad_rows_reported_with_line_and_rest_kept(tmp_path):
    data, mapping = write(tmp_path, CSV)
    result = load_tickets(data, mapping)
    assert result.rows_read == 4
    assert result.rows_used == 2
    lines = {r.line: r.reason for r in result.rejected}
    # Record 1 spans lines 2-3, so record 2 starts on line 4.
    assert set(lines) == {4, 6}
    assert "not a date" in lines[4]
    assert "duplicate ticket id" in lines[6] and "line 2" in lines[6]


def test_strict_stops_at_first_bad_row(tmp_path):
    data, mapping = write(tmp_path, CSV)
    with pytest.raises(RowError, match="line 4"):
        load_tickets(data, mapping, strict=True)


def test_zero_means_empty_and_labels_mapped(tmp_path):
    data, mapping = write(tmp_path, CSV)
    tickets = load_tickets(data, mapping).tickets.set_index("ticket_id")
    assert tickets.loc["1", "description"] == "第一行\n第二行"
    assert tickets.loc["1", "closure_notes"] == "代码缺陷\n重启"
    assert tickets.loc["3", "system"] == ""
    assert tickets.loc["3", "category"] == "other"
    assert tickets.loc["1", "category"] == "system"


def test_missing_column_named_with_columns_found(tmp_path):
    data, mapping = write(tmp_path, CSV, MAPPING.replace('"现象"', '"问题现象"'))
    with pytest.raises(MappingError) as excinfo:
        load_tickets(data, mapping)
    message = str(excinfo.value)
    assert "`问题现象`" in message
    assert "columns found: 编号, 开始时间, 现象" in message


def test_mapping_rejects_closure_field_at_intake(tmp_path):
    text = MAPPING + '\n[stages]\nintake = ["ticket_id", "description", "closure_notes"]\n'
    path = tmp_path / "m.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match="closure fields"):
        load_mapping(path)


def test_mapping_rejects_unknown_target_kind(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MAPPING.replace('kind = "multiclass"', 'kind = "ordinal"'), encoding="utf-8")
    with pytest.raises(MappingError, match="expected one of multiclass, binary, regression"):
        load_mapping(path)


def test_ict_export_loads_with_shipped_mapping(ict_path, ict_mapping):
    result = load_tickets(ict_path, ict_mapping)
    tickets = result.tickets
    assert result.rows_read == 829
    assert result.rows_used + len(result.rejected) == 829
    counts = tickets["category"].value_counts()
    assert counts["human"] == 563
    assert counts["system"] == 208
    assert counts["third_party"] == 13
    assert counts["other"] == 45
    # 紧急抢修 is known for 176 tickets only; the rest stay unlabelled for escalation.
    assert tickets["escalated"].notna().sum() == 176
    assert (tickets["description"].str.len() > 0).all()


def test_non_utf8_export_names_encoding_and_fix(tmp_path):
    from features.loading import ExportError

    data, mapping = write(tmp_path, CSV)
    data.write_bytes(data.read_text(encoding="utf-8").encode("gbk"))
    with pytest.raises(ExportError, match="is not UTF-8.*save it as UTF-8"):
        load_tickets(data, mapping)


def test_one_non_utf8_record_is_rejected(tmp_path):
    data, mapping = write(tmp_path, CSV)
    records = load_tickets(data, mapping).rows_read
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    encoded = [line.encode("utf-8") for line in lines]
    encoded[3] = lines[3].encode("gbk")
    data.write_bytes(b"".join(encoded))
    result = load_tickets(data, mapping)
    rejected = {row.line: row.reason for row in result.rejected}
    assert rejected[4].startswith("not UTF-8: byte 0x"), rejected
    assert "save the export as UTF-8" in rejected[4]
    assert result.rows_read == records


def test_non_utf8_header_fails_file(tmp_path):
    from features.loading import ExportError

    data, mapping = write(tmp_path, CSV)
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_bytes("工单".encode("gbk") + b"," + "".join(lines).encode("utf-8"))
    with pytest.raises(ExportError, match="on line 1.*save it as UTF-8"):
        load_tickets(data, mapping)


def test_long_cell_does_not_abort_the_file(tmp_path):
    data, mapping = write(tmp_path, CSV)
    text = data.read_text(encoding="utf-8").replace("网络中断", "网络中断" + "长" * 300_000)
    data.write_text(text, encoding="utf-8")
    result = load_tickets(data, mapping)
    assert result.rows_used == 2
    assert len(result.tickets.set_index("ticket_id").loc["3", "description"]) > 300_000


def test_unknown_suffix_rejected(tmp_path):
    from features.loading import ExportError

    path = tmp_path / "export.txt"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"suffix '\.txt'; expected one of \.csv"):
        load_tickets(path)


HOURS_MAPPING = MAPPING.replace(
    'closure_notes = ["原因", "处理"]', 'closure_notes = ["原因", "处理"]\nhandling_hours = "时长"'
)


def test_mixed_offsets_read_as_clock_times(tmp_path):
    data, mapping = write(
        tmp_path,
        """
        编号,开始时间,现象,系统,原因类,原因,处理
        1,2025-01-01 08:30:00,甲,ERP,软件设计缺陷,,
        2,2025-01-01T08:30:00+08:00,乙,ERP,软件设计缺陷,,
        3,2025-01-01T08:30:00Z,丙,ERP,软件设计缺陷,,
        4,9999-12-31 23:59:59,丁,ERP,软件设计缺陷,,
        5,1200-01-01 00:00:00,戊,ERP,软件设计缺陷,,
        """,
    )
    result = load_tickets(data, mapping)
    assert result.rows_used == 3
    assert {str(t) for t in result.tickets["created_at"]} == {"2025-01-01 08:30:00"}
    reasons = {r.line: r.reason for r in result.rejected}
    assert set(reasons) == {5, 6}
    assert all("created_at" in reason for reason in reasons.values())


def test_impossible_handling_hours_read_as_unknown(tmp_path):
    data, mapping = write(
        tmp_path,
        """
        编号,开始时间,现象,系统,原因类,原因,处理,时长
        1,2025-01-01 08:30:00,甲,ERP,软件设计缺陷,,,2.5
        2,2025-01-01 09:30:00,乙,ERP,软件设计缺陷,,,inf
        3,2025-01-01 10:30:00,丙,ERP,软件设计缺陷,,,-5
        4,2025-01-01 11:30:00,丁,ERP,软件设计缺陷,,,1e400
        """,
        mapping=HOURS_MAPPING,
    )
    result = load_tickets(data, mapping)
    assert result.rows_used == 4
    hours = result.tickets.set_index("ticket_id")["handling_hours"]
    assert hours["1"] == 2.5
    assert hours[["2", "3", "4"]].isna().all()


def test_mapping_rejects_misspelt_top_level_key(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MAPPING.replace("null_values", "nul_values"), encoding="utf-8")
    with pytest.raises(MappingError, match=r"unknown keys \['nul_values'\]"):
        load_mapping(path)


def test_mapping_rejects_category_code_not_in_taxonomy(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MAPPING.replace('= "human"', '= "humn"'), encoding="utf-8")
    with pytest.raises(MappingError, match=r"\['humn'\], which are not category codes"):
        load_mapping(path)


def test_mapping_rejects_misspelt_target_key(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MAPPING.replace('empty = "other"', 'emtpy = "other"'), encoding="utf-8")
    with pytest.raises(MappingError, match=r"target 'category' has unknown keys \['emtpy'\]"):
        load_mapping(path)


MODEL_TABLE = """
    [targets.category.model]
    class_weight = 0
    params = {n_estimators = 50}
    features = {char_ngrams = [1, 2]}
    """


def test_mapping_reads_target_model_settings(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MAPPING + textwrap.dedent(MODEL_TABLE), encoding="utf-8")
    model = load_mapping(path).targets["category"].model
    assert model["class_weight"] == 0.0
    assert model["params"] == {"n_estimators": 50}
    assert model["features"] == {"char_ngrams": (1, 2)}


def test_mapping_without_model_table_has_no_settings(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(MAPPING, encoding="utf-8")
    assert load_mapping(path).targets["category"].model == {}


@pytest.mark.parametrize(
    "table, message",
    [
        ("class_wieght = 0", r"`model` has unknown keys \['class_wieght'\]"),
        ("class_weight = -1", r"must be a number >= 0"),
        ("class_weight = true", r"must be a number >= 0"),
        ('params = "fast"', r"`model.params` must be a table"),
    ],
)
def test_mapping_rejects_bad_model_settings(tmp_path, table, message):
    path = tmp_path / "m.toml"
    text = MAPPING + f"\n[targets.category.model]\n{table}\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match=message):
        load_mapping(path)


def test_mapping_rejects_class_weight_of_regression(tmp_path):
    path = tmp_path / "m.toml"
    text = MAPPING + textwrap.dedent(
        """
        [targets.hours]
        kind = "regression"
        column = "时长"
        [targets.hours.model]
        class_weight = 0
        """
    )
    path.write_text(text, encoding="utf-8")
    with pytest.raises(MappingError, match="regression target 'hours' takes no"):
        load_mapping(path)


def test_ict_mapping_fits_routing_unweighted():
    from features.mapping import MAPPINGS_DIR

    targets = load_mapping(MAPPINGS_DIR / "ict.toml").targets
    assert targets["handling_group"].model == {"class_weight": 0.0}
    assert targets["root_cause"].model == {}
