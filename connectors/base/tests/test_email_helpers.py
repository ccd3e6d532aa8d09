"""The helpers the three inbound-email sources share: form bodies, MIME, headers, dates, ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connectors.base.formdata import MAX_FIELDS, read_form
from connectors.base.inbound import BadPayload
from connectors.base.mime import (
    form_without_attachments,
    parse_mime,
    plain_text,
    strip_attachments,
)
from connectors.base.replies import (
    Headers,
    address,
    automated,
    decode_words,
    email_date,
    first_address,
    message_ids,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MULTIPART = "multipart/form-data; boundary=B"


# --- form bodies ----------------------------------------------------------------------------------


def test_multipart_with_bare_newlines_and_a_quoted_boundary():
    body = b'--B\nContent-Disposition: form-data; name="a"\n\none\n--B--\n'
    assert read_form(body, 'multipart/form-data; boundary="B"').first("a") == "one"


def test_a_boundary_inside_a_line_is_content():
    body = b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nx --B y\r\n--B--\r\n'
    assert read_form(body, MULTIPART).first("a") == "x --B y"


def test_file_parts_are_not_fields_and_are_not_kept():
    body = (
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\none\r\n'
        b'--B\r\nContent-Disposition: form-data; name="f"; filename="s.txt"\r\n\r\nSECRET\r\n'
        b"--B--\r\n"
    )
    form = read_form(body, MULTIPART)
    assert (form.first("f"), form.files, [p.name for p in form.fields()]) == (None, 1, ["a"])
    kept = form.without_files({"a": b"ONE"})
    assert b"SECRET" not in kept and read_form(kept, MULTIPART).first("a") == "ONE"


def test_rfc2231_field_names_and_part_charsets():
    body = (
        b"--B\r\nContent-Disposition: form-data; name*=utf-8''caf%C3%A9\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n\xe9t\xe9\r\n--B--\r\n"
    )
    assert read_form(body, MULTIPART).first("café") == "été"


def test_urlencoded_keeps_blank_values_and_repeated_names():
    form = read_form(b"a=&b=1&b=2", "application/x-www-form-urlencoded")
    assert (form.first("a"), form.first("b")) == ("", "1")
    assert form.without_files() == b"a=&b=1&b=2"


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"a=1", "application/json", "expected application/x-www-form-urlencoded"),
        (b"--B--", "multipart/form-data", "boundary"),
        (b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nx', MULTIPART, "truncated"),
        (b"--B\r\nno blank line\r\n--B--", MULTIPART, "no blank line"),
        (b"a=1&" * (MAX_FIELDS + 1), "application/x-www-form-urlencoded", "cannot be read"),
        (b"--B\r\n" * (MAX_FIELDS + 2), MULTIPART, "more than"),
    ],
)
def test_unreadable_forms(body, content_type, words):
    with pytest.raises(BadPayload) as caught:
        read_form(body, content_type)
    assert words in caught.value.detail


# --- MIME -----------------------------------------------------------------------------------------

MESSAGE = (
    b"From: Ann <ann@example.com>\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
    b"--zz\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"Tm90IG5vdyDigJQgdGhhbmtz\r\n"
    b"--zz\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n\r\nPNGDATA\r\n"
    b"--zz\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=n.txt\r\n\r\n"
    b"NOTES\r\n--zz--\r\n"
)


def test_plain_text_is_the_first_text_part_that_is_no_attachment():
    assert plain_text(parse_mime(MESSAGE)) == "Not now — thanks"


def test_strip_attachments_keeps_only_text_parts():
    stripped = strip_attachments(MESSAGE)
    assert b"PNGDATA" not in stripped and b"NOTES" not in stripped
    assert plain_text(parse_mime(stripped)) == "Not now — thanks"


def test_a_form_without_attachments_keeps_its_mime_field_without_attachment_parts():
    body = (
        b'--B\r\nContent-Disposition: form-data; name="email"\r\n\r\n' + MESSAGE + b"\r\n"
        b'--B\r\nContent-Disposition: form-data; name="f"; filename="s.txt"\r\n\r\nSECRET\r\n'
        b"--B--\r\n"
    )
    kept = form_without_attachments(read_form(body, MULTIPART), "email")
    assert b"SECRET" not in kept and b"PNGDATA" not in kept and b"NOTES" not in kept
    mime = read_form(kept, MULTIPART).raw("email")
    assert mime is not None and plain_text(parse_mime(mime)) == "Not now \u2014 thanks"
    without_field = read_form(body.replace(b'name="email"', b'name="other"'), MULTIPART)
    assert form_without_attachments(without_field, "email") == without_field.without_files()


# --- headers, addresses, ids, dates ---------------------------------------------------------------


def test_headers_are_unfolded_and_case_insensitive():
    headers = Headers.parse("References: <a@b>\r\n <c@d>\r\nSUBJECT: hi\r\n\r\n")
    assert (headers.get("references"), headers.get("Subject")) == ("<a@b> <c@d>", "hi")


def test_addresses():
    assert address("Ann Example <Ann@Example.COM>") == "ann@example.com"
    assert address(None) == address("") == ""
    assert first_address([None, "", "Sales <s@x.com>, t@x.com"]) == "s@x.com"
    assert decode_words("=?UTF-8?Q?Chlo=C3=A9?=") == "Chloé"
    assert decode_words("=?bogus?Q?x?=") == "=?bogus?Q?x?="


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("<a@b> <c@d>", ["<a@b>", "<c@d>"]),
        ("a@b", ["<a@b>"]),
        ("two words", []),
        ("", []),
        (None, []),
    ],
)
def test_message_ids(value, ids):
    assert message_ids(value) == ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Thu, 26 Nov 2026 10:15:00 +0100", datetime(2026, 11, 26, 9, 15, tzinfo=UTC)),
        ("Thu, 26 Nov 2026 10:15:00 -0000", datetime(2026, 11, 26, 10, 15, tzinfo=UTC)),
        ("2026-11-26T10:15:00+01:00", datetime(2026, 11, 26, 9, 15, tzinfo=UTC)),
        ("Fri, 27 Nov 2026 11:59:00 +0000", datetime(2026, 11, 27, 11, 59, tzinfo=UTC)),
        ("Sat, 28 Nov 2026 12:00:00 +0000", NOW),  # more than a day ahead: a broken clock
        ("yesterday", NOW),
        (None, NOW),
    ],
)
def test_email_date(value, expected):
    assert email_date(value, NOW) == expected
    assert email_date(value, NOW) <= NOW + timedelta(days=1)


@pytest.mark.parametrize(
    ("pairs", "sender", "envelope", "automatic"),
    [
        ([], "ann@example.com", "ann@example.com", False),
        ([("Auto-Submitted", "no")], "ann@example.com", None, False),
        ([("Auto-Submitted", "auto-replied; owner-email=x@y")], "ann@example.com", None, True),
        ([("X-Autoreply", "no")], "ann@example.com", None, False),
        ([("X-Autorespond", "")], "ann@example.com", None, True),
        ([("Precedence", "list")], "ann@example.com", None, False),
        ([("Precedence", " Bulk ")], "ann@example.com", None, True),
        ([], "MAILER-DAEMON", None, True),
        ([], "ann@example.com", "postmaster@example.com", True),
        ([], "ann@example.com", "", True),
        ([("Content-Type", "multipart/report; report-type=disposition-notification")], "a@b.c",
         None, True),
    ],
)  # fmt: skip
def test_automated(pairs, sender, envelope, automatic):
    assert (automated(Headers(pairs), sender, envelope) is not None) == automatic
