"""onnxruntime 1.32's model-package API (``ModelPackage``, ``ModelPackageContext``,
``ModelPackageComponentContext``, ``ModelPackageOptions``, ``ModelPackageWriteMode``).

A model package is onnxruntime's directory format for shipping several execution-provider-specific
variants of a model's components. jitort compiles one ONNX model for the CPU (or CUDA) itself and
has no use for per-EP variants, so it does not read or write packages: the names exist with
onnxruntime's signatures (code that imports them keeps importing), the option and enum types work,
and every operation on a package raises onnxruntime's ``NotImplemented`` naming the feature.
"""
from __future__ import annotations

from typing import Any, NoReturn

from jitort.errors import NotImplemented as OrtNotImplemented
from jitort.options import OrtEnum, SessionOptions

__all__ = ["ModelPackage", "ModelPackageComponentContext", "ModelPackageContext", "ModelPackageOptions",
           "ModelPackageWriteMode"]


def _unsupported(what: str) -> NoReturn:
    raise OrtNotImplemented(f"{what}: jitort does not support onnxruntime model packages; load the "
                            "variant's .onnx file with InferenceSession instead")


class ModelPackageWriteMode(OrtEnum):
    """How ``ModelPackage.commit`` writes a package."""

    PRESERVE = 0
    DENSE = 1


class ModelPackageOptions:
    """Execution provider configuration used for package variant selection."""

    def __init__(self, sess_options: SessionOptions) -> None:
        if not isinstance(sess_options, SessionOptions):
            raise TypeError("__init__(): incompatible constructor arguments: expected SessionOptions, "
                            f"got {type(sess_options).__name__}")
        self._sess_options = sess_options


class ModelPackageComponentContext:
    """A selected component variant from an existing model package (made by ``select_component``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("onnxruntime.ModelPackageComponentContext: No constructor defined!")

    def get_selected_variant_name(self) -> str:
        _unsupported("ModelPackageComponentContext.get_selected_variant_name")

    def get_selected_variant_folder_path(self) -> str:
        _unsupported("ModelPackageComponentContext.get_selected_variant_folder_path")

    def create_session(self, sess_options: SessionOptions | None = None) -> NoReturn:
        _unsupported("ModelPackageComponentContext.create_session")


class ModelPackageContext:
    """Open and inspect an existing model package."""

    def __init__(self, package_root: str) -> None:
        _unsupported(f"ModelPackageContext({package_root!r})")

    def get_schema_version(self) -> int:
        _unsupported("ModelPackageContext.get_schema_version")

    def get_component_count(self) -> int:
        _unsupported("ModelPackageContext.get_component_count")

    def get_component_names(self) -> list[str]:
        _unsupported("ModelPackageContext.get_component_names")

    def get_variant_count(self, component_name: str) -> int:
        _unsupported("ModelPackageContext.get_variant_count")

    def get_variant_names(self, component_name: str) -> list[str]:
        _unsupported("ModelPackageContext.get_variant_names")

    def get_variant_ep_name(self, component_name: str, variant_name: str) -> str | None:
        _unsupported("ModelPackageContext.get_variant_ep_name")

    def resolve_string_ref(self, string_ref: str, base_dir: str | None = None, must_exist: bool = False) -> str:
        _unsupported("ModelPackageContext.resolve_string_ref")

    def select_component(self, component_name: str, options: ModelPackageOptions) -> ModelPackageComponentContext:
        _unsupported("ModelPackageContext.select_component")


class ModelPackage:
    """Author model packages (onnxruntime's native model package library; JSON arguments are strings)."""

    def __init__(self) -> None:
        _unsupported("ModelPackage()")

    @staticmethod
    def open(package_root: str, allow_external_paths: bool = False, follow_symlinks: bool = True,
             strict_unknown_fields: bool = True) -> ModelPackage:
        _unsupported("ModelPackage.open")

    @staticmethod
    def compute_directory_hash(source_dir: str) -> str:
        _unsupported("ModelPackage.compute_directory_hash")

    def close(self) -> None:
        _unsupported("ModelPackage.close")

    def set_metadata(self, name: str | None = None, version: str | None = None,
                     description: str | None = None) -> None:
        _unsupported("ModelPackage.set_metadata")

    def set_layout(self, layout: str) -> None:
        _unsupported("ModelPackage.set_layout")

    def set_component_inline(self, name: str, component_json: str) -> None:
        _unsupported("ModelPackage.set_component_inline")

    def set_component_external(self, name: str, path: str) -> None:
        _unsupported("ModelPackage.set_component_external")

    def remove_component(self, name: str) -> None:
        _unsupported("ModelPackage.remove_component")

    def set_variant(self, component_name: str, variant_name: str, variant_json: str) -> None:
        _unsupported("ModelPackage.set_variant")

    def remove_variant(self, component_name: str, variant_name: str) -> None:
        _unsupported("ModelPackage.remove_variant")

    def set_variant_executor_info_inline(self, component_name: str, variant_name: str, namespace_key: str,
                                         info_json: str) -> None:
        _unsupported("ModelPackage.set_variant_executor_info_inline")

    def set_variant_executor_info_external(self, component_name: str, variant_name: str, namespace_key: str,
                                           path: str) -> None:
        _unsupported("ModelPackage.set_variant_executor_info_external")

    def remove_variant_executor_info(self, component_name: str, variant_name: str, namespace_key: str) -> None:
        _unsupported("ModelPackage.remove_variant_executor_info")

    def set_additional_metadata_json(self, scope: str, component_name: str | None = None,
                                     variant_name: str | None = None, json: str | None = None) -> None:
        _unsupported("ModelPackage.set_additional_metadata_json")

    def add_shared_asset(self, source_dir: str, expected_uri: str | None = None, copy_in: bool = True) -> str:
        _unsupported("ModelPackage.add_shared_asset")

    def remove_shared_asset(self, uri: str) -> None:
        _unsupported("ModelPackage.remove_shared_asset")

    def get_info(self) -> dict:
        _unsupported("ModelPackage.get_info")

    def get_component_json(self, component_name: str) -> str:
        _unsupported("ModelPackage.get_component_json")

    def get_variant_json(self, component_name: str, variant_name: str) -> str:
        _unsupported("ModelPackage.get_variant_json")

    def resolve_asset_uri(self, uri: str) -> str:
        _unsupported("ModelPackage.resolve_asset_uri")

    def resolve_string_ref(self, string_ref: str, base_dir: str | None = None, must_exist: bool = False) -> str:
        _unsupported("ModelPackage.resolve_string_ref")

    def commit(self, dest_root: str | None = None,
               mode: ModelPackageWriteMode = ModelPackageWriteMode.PRESERVE) -> None:
        _unsupported("ModelPackage.commit")

    def prune(self) -> None:
        _unsupported("ModelPackage.prune")
