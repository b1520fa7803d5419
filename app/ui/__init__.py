"""Helpers of the Streamlit page (streamlit_app.py): answers, conversation, sidebar, document library and uploads."""
