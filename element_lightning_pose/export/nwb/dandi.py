"""DANDI's requirements, checked before anything is written: subject and session metadata as
nwbinspector's DANDI configuration reads them, the file names of a dandiset's layout
(``sub-<id>/sub-<id>_ses-<id>_behavior+image.nwb``), and the inspector itself.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

from pynwb import NWBFile
from pynwb.file import Subject

from element_lightning_pose.engine.types import PathLike
from element_lightning_pose.export.nwb.inputs import NwbError, SessionInfo, SubjectInfo

DANDI_SEXES = ("M", "F", "U", "O")


C_ELEGANS_SEXES = ("XO", "XX")


# The same forms nwbinspector's DANDI configuration accepts (checks/_nwbfile_metadata.py).
_ISO_DURATION = re.compile(
    r"^P(?!$)(\d+(?:\.\d+)?Y)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?W)?(\d+(?:\.\d+)?D)?"
    r"(T(?=\d)(\d+(?:\.\d+)?H)?(\d+(?:\.\d+)?M)?(\d+(?:\.\d+)?S)?)?$"
)


_SPECIES_FORM = re.compile(r"([A-Z][a-z]* [a-z]+)|(http://purl\.obolibrary\.org/obo/NCBITaxon_\d+)")


_WEIGHT_FORM = re.compile(r"(?i)^\d+(\.\d+)? (kg|g|mg|ug|μg|ng|pg)$")


def _is_tz_aware(moment: datetime) -> bool:
    return moment.tzinfo is not None and moment.tzinfo.utcoffset(moment) is not None


def _check_identifier(value: str | None, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise NwbError(f"{field} is required by DANDI and must be a non-empty string")
    if "/" in value:
        raise NwbError(f"{field} {value!r} contains '/', which DANDI forbids")


def _is_iso_age(age: str) -> bool:
    if _ISO_DURATION.fullmatch(age):
        return True
    if age.count("/") != 1:
        return False
    lower, upper = age.split("/")
    bounds_valid = all(bound == "" or _ISO_DURATION.fullmatch(bound) for bound in (lower, upper))
    return bounds_valid and bool(lower or upper)


def validate_subject(subject: SubjectInfo) -> None:
    """Raise ``ValueError`` naming the first subject field that DANDI would reject."""
    _check_identifier(subject.subject_id, "SubjectInfo.subject_id")
    if not subject.species:
        raise NwbError("SubjectInfo.species is required by DANDI (e.g. 'Mus musculus')")
    if not _SPECIES_FORM.fullmatch(subject.species):
        raise NwbError(
            f"SubjectInfo.species {subject.species!r} must be a Latin binomial such as "
            "'Mus musculus' or an NCBI taxonomy IRI such as "
            "'http://purl.obolibrary.org/obo/NCBITaxon_10090'"
        )
    allowed = C_ELEGANS_SEXES if subject.species == "Caenorhabditis elegans" else DANDI_SEXES
    if subject.sex not in allowed:
        raise NwbError(f"SubjectInfo.sex {subject.sex!r} must be one of {', '.join(allowed)}")
    if subject.age is None and subject.date_of_birth is None:
        raise NwbError("SubjectInfo.age or SubjectInfo.date_of_birth is required by DANDI")
    if subject.age is not None and not _is_iso_age(subject.age):
        raise NwbError(
            f"SubjectInfo.age {subject.age!r} must be an ISO-8601 duration such as 'P90D' "
            "(or a range such as 'P80D/P100D')"
        )
    if subject.date_of_birth is not None and not _is_tz_aware(subject.date_of_birth):
        raise NwbError("SubjectInfo.date_of_birth must be timezone-aware")
    if subject.weight is not None and not _WEIGHT_FORM.fullmatch(subject.weight):
        raise NwbError(f"SubjectInfo.weight {subject.weight!r} must read '<number> <unit>', e.g. '25 g'")


def validate_session(session: SessionInfo) -> None:
    """Raise ``ValueError`` naming the first session field that DANDI would reject."""
    _check_identifier(session.session_id, "SessionInfo.session_id")
    if not isinstance(session.session_start_time, datetime):
        raise NwbError("SessionInfo.session_start_time must be a datetime")
    if not _is_tz_aware(session.session_start_time):
        raise NwbError(
            "SessionInfo.session_start_time must be timezone-aware "
            "(e.g. datetime(..., tzinfo=ZoneInfo('America/New_York')))"
        )
    if session.session_start_time > datetime.now(timezone.utc):
        raise NwbError(f"SessionInfo.session_start_time {session.session_start_time.isoformat()} lies in the future")
    if not session.session_description or not session.session_description.strip():
        raise NwbError("SessionInfo.session_description must be a non-empty string")


def build_nwbfile(session: SessionInfo, subject: SubjectInfo) -> NWBFile:
    """An empty in-memory ``NWBFile`` with DANDI-clean session and subject metadata."""
    validate_session(session)
    validate_subject(subject)
    nwb_subject = Subject(
        subject_id=subject.subject_id,
        species=subject.species,
        sex=subject.sex,
        age=subject.age,
        date_of_birth=subject.date_of_birth,
        description=subject.description,
        strain=subject.strain,
        genotype=subject.genotype,
        weight=subject.weight,
    )
    return NWBFile(
        session_description=session.session_description,
        identifier=session.identifier or str(uuid.uuid4()),
        session_start_time=session.session_start_time,
        session_id=session.session_id,
        experimenter=list(session.experimenter) if session.experimenter else None,
        lab=session.lab,
        institution=session.institution,
        experiment_description=session.experiment_description,
        keywords=list(session.keywords) if session.keywords else None,
        subject=nwb_subject,
    )


def _dandi_label(value: str, field: str) -> str:
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9-]", "-", str(value))).strip("-")
    if not cleaned:
        raise NwbError(f"{field} {value!r} leaves nothing usable in a DANDI file name")
    return cleaned


def dandi_filename(subject_id: str, session_id: str) -> str:
    """``sub-<id>_ses-<id>_behavior+image.nwb`` with each id reduced to letters, digits and '-'.

    DANDI separates entities with '_' and modalities with '+', so any other character in an id
    (including '_', '.', '/', spaces) becomes '-'.
    """
    subject, session = _dandi_label(subject_id, "subject_id"), _dandi_label(session_id, "session_id")
    return f"sub-{subject}_ses-{session}_behavior+image.nwb"


def dandi_path(subject_id: str, session_id: str) -> Path:
    """Where ``dandi organize`` puts the file inside a dandiset: ``sub-<id>/<dandi_filename>``."""
    return Path(f"sub-{_dandi_label(subject_id, 'subject_id')}") / dandi_filename(subject_id, session_id)


def inspect_dandi(path: PathLike) -> list:
    """nwbinspector's messages for ``path`` under its DANDI configuration (all importances).

    Each item is an ``nwbinspector.InspectorMessage``; DANDI refuses files with messages of
    importance ``CRITICAL`` (or ``PYNWB_VALIDATION`` / ``ERROR``).
    """
    from nwbinspector import inspect_nwbfile, load_config  # slow import, only when asked

    return list(inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi")))
