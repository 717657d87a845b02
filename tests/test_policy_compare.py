"""The pure comparison of the node's policies with its stable addresses: verdicts and hostile answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sidecar.policy import compare

EXPECTED = compare.expected_addresses(overlay_ip="10.96.12.34", tcp_bind=False, tcp_port=32148, rest_port=32149,
                                      broker_port=32150)


def pol(local_ip: str = "10.96.12.34", *, name: str = "el-op", company: str = "New Company", kind: str = "operator",
        id: str = "a1", date: str = "2026-11-27T10:00:00Z", **extra: Any) -> dict[str, Any]:
    fields = {"name": name, "company": company, "ip": "203.0.113.10", "local_ip": local_ip, "port": 32148,
              "rest_port": 32149, "broker_port": 32150, "id": id, "date": date, **extra}
    return {kind: fields}


def judge(*policies: dict[str, Any], expected: dict[str, str] = EXPECTED) -> compare.Verdict:
    parsed = compare.parse(json.dumps(list(policies)))
    return compare.judge(parsed, kind="operator", name="el-op", company="New Company", expected=expected)


def test_policy_types_fold_the_master_variants() -> None:
    assert compare.policy_type("operator") == "operator"
    assert compare.policy_type("master-operator") == "operator"
    assert compare.policy_type("Master-Publisher") == "publisher"
    assert compare.policy_type("generic") == "generic"


def test_query_is_one_quoted_name_condition() -> None:
    assert compare.query("operator", "el-op") == 'blockchain get operator where name = "el-op"'
    assert compare.query("operator", "op-0 operator") == 'blockchain get operator where name = "op-0 operator"'


@pytest.mark.parametrize("name", ['a"b', "a'b", "a\nb", "", " padded", "x\x00"])
def test_a_name_that_would_change_the_command_is_refused(name: str) -> None:
    with pytest.raises(ValueError):
        compare.query("operator", name)


def test_a_strange_policy_type_is_refused() -> None:
    with pytest.raises(ValueError):
        compare.query("operator where name = x or", "el-op")


def test_expected_addresses_follow_tcp_bind() -> None:
    assert EXPECTED == {"local_ip": "10.96.12.34", "port": "32148", "rest_port": "32149", "broker_port": "32150"}
    bound = compare.expected_addresses(overlay_ip="10.96.12.34", tcp_bind=True, tcp_port=32148, rest_port=None,
                                       broker_port=None)
    assert bound == {"ip": "10.96.12.34", "port": "32148"}
    assert compare.expected_addresses(overlay_ip=None, tcp_bind=False, tcp_port=None, rest_port=32149,
                                      broker_port=None) == {"rest_port": "32149"}


def test_one_policy_with_the_stable_addresses_matches() -> None:
    verdict = judge(pol())
    assert (verdict.name, verdict.matches, verdict.count, verdict.duplicates) == ("match", True, 1, False)
    assert verdict.summary() == "policy a1 carries the node's addresses"


def test_ports_given_as_text_match_ports_given_as_numbers() -> None:
    assert judge(pol(port="32148", rest_port=" 32149 ")).matches


def test_the_old_pod_ip_is_drift_and_names_the_field() -> None:
    verdict = judge(pol("10.244.1.7"))
    assert (verdict.name, verdict.matches, verdict.count) == ("drift", False, 1)
    assert verdict.policies[0].differences == (compare.Difference("local_ip", "10.244.1.7", "10.96.12.34"),)
    assert verdict.summary() == "policy a1 differs: local_ip 10.244.1.7 (expected 10.96.12.34)"


def test_a_missing_field_is_drift() -> None:
    raw = pol()
    del raw["operator"]["broker_port"]
    verdict = judge(raw)
    assert verdict.name == "drift"
    assert verdict.policies[0].differences[0].describe() == "broker_port (none) (expected 32150)"


def test_two_policies_with_the_same_name_are_duplicates_matching_one_first() -> None:
    verdict = judge(pol("10.244.1.7", id="old", date="2026-11-01T00:00:00Z"),
                    pol(id="new", date="2026-11-02T00:00:00Z"))
    assert (verdict.name, verdict.matches, verdict.count, verdict.duplicates) == ("duplicates", True, 2, True)
    assert [p.id for p in verdict.policies] == ["new", "old"]
    assert verdict.policy is not None and verdict.policy.id == "new"
    assert verdict.summary() == "2 policies carry this node's name and company (new, old); policy new matches"


def test_duplicates_none_of_which_match_show_the_newest() -> None:
    verdict = judge(pol("10.244.1.7", id="old", date="2026-11-01T00:00:00Z"),
                    pol("10.244.2.9", id="newer", date="2026-11-03T00:00:00Z"))
    assert (verdict.name, verdict.matches) == ("duplicates", False)
    assert verdict.policy is not None and verdict.policy.id == "newer"
    assert verdict.summary().endswith("none matches")


def test_no_policy_is_missing() -> None:
    verdict = judge()
    assert (verdict.name, verdict.matches, verdict.count) == ("missing", False, 0)
    assert verdict.policy is None


def test_other_names_companies_and_types_are_not_this_node() -> None:
    verdict = judge(pol(name="el-op2"), pol(company="Other Co."), pol(kind="query"), pol(name="EL-OP"))
    assert verdict.name == "missing"


def test_a_huge_answer_keeps_the_true_count() -> None:
    policies = [pol("10.244.1.7", id=str(i)) for i in range(compare.MAX_POLICIES + 20)]
    verdict = judge(*policies)
    assert verdict.count == compare.MAX_POLICIES + 20
    assert len(verdict.policies) == compare.MAX_POLICIES


@pytest.mark.parametrize("body", ["", "running", "{}", '{"operator": {}}', "[1]", '["x"]', '[{"a": {}, "b": {}}]',
                                  '[{"operator": "x"}]', '{"err_code": 6, "err_text": "Unknown command"}', "[", "null"])
def test_an_answer_that_is_not_a_list_of_policies_is_an_error_not_a_verdict(body: str) -> None:
    with pytest.raises(ValueError):
        compare.parse(body)


def test_fields_holding_objects_are_not_addresses() -> None:
    verdict = judge(pol(local_ip={"nested": "10.96.12.34"}))
    assert verdict.name == "drift"
    assert verdict.policies[0].addresses.get("local_ip") is None


def test_the_status_view_lists_every_address_and_difference() -> None:
    view = judge(pol("10.244.1.7")).policies[0].as_dict()
    assert view == {"id": "a1", "ip": "203.0.113.10", "local_ip": "10.244.1.7", "port": "32148", "rest_port": "32149",
                    "broker_port": "32150", "date": "2026-11-27T10:00:00Z", "matches": False,
                    "differences": [{"field": "local_ip", "policy": "10.244.1.7", "expected": "10.96.12.34"}]}
