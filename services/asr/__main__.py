"""`python -m services.asr`: settings → engine → bus → loop."""

from services.asr.service import AsrService
from services.asr.settings import AsrSettings
from shared.runner import main_for


def main() -> None:
    """Run the ASR service."""
    main_for("asr", AsrSettings(), AsrService)


if __name__ == "__main__":
    main()
