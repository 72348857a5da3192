"""The HDF5 face bank: schema, crash-safe writer, reader."""

from facebank.bank.records import FaceRecord, Rejection
from facebank.bank.store import Bank, Face, open_bank
from facebank.bank.writer import BankWriter, create_bank

__all__ = ["Bank", "BankWriter", "Face", "FaceRecord", "Rejection", "create_bank", "open_bank"]
