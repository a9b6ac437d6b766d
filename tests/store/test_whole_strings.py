"""Every check of a name, alias, version or hub dataset id covers the whole string (issue 26
#11): `^...$` with `re.match` let a final newline through."""

from __future__ import annotations

import pytest

from adapters_store import InvalidName, InvalidRoute, validate_name
from adapters_store.routing import check_alias, check_split, is_alias, is_version, parse
from training.errors import TrainingError
from training.loading import check_hub_id

ENDS = ["\n", "\r", "\r\n", " ", "\t", "\x00", "\u2028"]


@pytest.mark.parametrize("end", ENDS)
def test_names_aliases_and_versions_with_an_end_are_refused(end):
    for text in (f"shared-x{end}", f"team-a/x{end}", f"{end}shared-x"):
        with pytest.raises(InvalidName):
            validate_name(text)
    for selector in (f"alpha@prod{end}", f"alpha@3{end}", f"alpha{end}@3"):
        with pytest.raises(InvalidName):
            parse(selector)
    with pytest.raises(InvalidRoute):
        check_alias(f"prod{end}")
    with pytest.raises(InvalidRoute):
        check_split([(f"3{end}", 1)])
    assert not is_alias(f"prod{end}") and not is_version(f"3{end}")
    with pytest.raises(TrainingError):
        check_hub_id(f"owner/name{end}", strict=True)


def test_plain_ones_still_pass():
    assert validate_name("team-a/shared-x") == "team-a/shared-x"
    assert parse("alpha@prod") == ("alpha", "prod") and parse("alpha@12") == ("alpha", "12")
    assert check_split([("3", 1), ("canary", 2)]) == (("3", 1), ("canary", 2))
    check_hub_id("owner/name", strict=True)


@pytest.mark.parametrize("target", ["٣", "03", "0", "1" * 10])
def test_split_targets_are_version_numbers_as_selectors_write_them(target):
    """Also a version: ASCII digits without a leading 0, as `name@N` takes them."""
    with pytest.raises(InvalidRoute):
        check_split([(target, 1)])
