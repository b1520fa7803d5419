from settings.model import Settings, available_profiles, load_settings

__all__ = ["Settings", "available_profiles", "load_settings"]
