//! The bus door's errors: one named error per `ErrorCode`, with the socket's messages.

use bci2token_api::{ApiError, ErrorCode};

/// `org.bci2token.Error.*` (the variant's name is the error name's last part).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.bci2token.Error")]
pub enum BusError {
    #[zbus(error)]
    ZBus(zbus::Error),
    BadRequest(String),
    NotFound(String),
    PermissionDenied(String),
    InvalidConfig(String),
    Driver(String),
    LimitReached(String),
    Internal(String),
    RequestTooLarge(String),
    Timeout(String),
    TooManyConnections(String),
    RateLimited(String),
}

impl From<ApiError> for BusError {
    fn from(e: ApiError) -> Self {
        let m = e.message;
        match e.code {
            ErrorCode::BadRequest => BusError::BadRequest(m),
            ErrorCode::NotFound => BusError::NotFound(m),
            ErrorCode::PermissionDenied => BusError::PermissionDenied(m),
            ErrorCode::InvalidConfig => BusError::InvalidConfig(m),
            ErrorCode::DriverError => BusError::Driver(m),
            ErrorCode::LimitReached => BusError::LimitReached(m),
            ErrorCode::Internal => BusError::Internal(m),
            ErrorCode::RequestTooLarge => BusError::RequestTooLarge(m),
            ErrorCode::Timeout => BusError::Timeout(m),
            ErrorCode::TooManyConnections => BusError::TooManyConnections(m),
            ErrorCode::RateLimited => BusError::RateLimited(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn every_code_has_the_api_crates_name() {
        for code in ErrorCode::ALL {
            let e = BusError::from(ApiError::new(code, "why"));
            assert_eq!(e.name().as_str(), code.dbus_name());
            assert_eq!(e.description(), Some("why"));
        }
    }
}
