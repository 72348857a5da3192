"""The HDF5 face bank: schema, crash-safe writer, reader."""

from facebank.bank.records import FaceRecord, Rejection
from facebank.bank.maintain import compact_bank, copy_bank, upgrade_bank
from facebank.bank.store import Bank, Face, open_bank
from facebank.bank.writer import BankWriter, create_bank

__all__ = ["Bank", "BankWriter", "Face", "FaceRecord", "Rejection", "compact_bank", "copy_bank", "create_bank",
           "open_bank", "upgrade_bank"]
